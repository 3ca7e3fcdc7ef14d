"""The interface every channel adapter implements."""

from __future__ import annotations

from typing import Literal, Protocol

from topics import Action

Outcome = Literal["sent", "suppressed", "failed"]


class Channel(Protocol):
    name: str

    async def send(self, action: Action) -> tuple[Outcome, str]:
        """Deliver one action; return the outcome and a short reason."""
        ...
