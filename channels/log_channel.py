"""The `log` channel: writes each action as one line, for local runs and the demo."""

from __future__ import annotations

import logging

from channels.base import Outcome
from topics import Action

logger = logging.getLogger("storepulse.actions")


class LogChannel:
    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, action: Action) -> tuple[Outcome, str]:
        logger.info(
            "ACTION %s via %s to %s: %s",
            action.trigger_id,
            self.name,
            action.member_id,
            action.payload.get("text", ""),
        )
        return "sent", "ok"


def channel_for(name: str) -> LogChannel:
    """Every channel is the log channel until a webhook target is configured for it."""
    return _CHANNELS.setdefault(name, LogChannel(name))


_CHANNELS: dict[str, LogChannel] = {}
