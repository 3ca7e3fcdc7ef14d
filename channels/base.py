"""The interface every channel adapter implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

Outcome = Literal["sent", "suppressed", "failed"]


class Channel(Protocol):
    name: str

    async def send(
        self, message: dict[str, Any], keep_alive: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[Outcome, str]:
        """Deliver one message; return the outcome and a short reason. `keep_alive` is called
        between retries of a long delivery."""
        ...
