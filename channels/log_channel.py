"""The `log` channel: writes each action as one line, for local runs and the demo."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.base import Outcome

logger = logging.getLogger("storepulse.actions")


class LogChannel:
    def __init__(self, name: str) -> None:
        self.name = name

    async def send(
        self, message: dict[str, Any], keep_alive: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[Outcome, str]:
        logger.info(
            "ACTION %s via %s to %s: %s",
            message["trigger_id"],
            self.name,
            message["member_id"],
            message.get("text", ""),
        )
        return "sent", "ok"
