"""Duplicate `event_id`s within a window, shared by all workers through Redis."""

from __future__ import annotations

import hashlib
from typing import Any

from core.settings import Settings
from state.redis_store import as_bytes, key


def queue_first_seen(
    pipe: Any,
    settings: Settings,
    topic: str,
    event_id: str,
    position: str,
    window_s: int | None = None,
) -> None:
    """Queue, on a batch's pipeline, whether `event_id` is new to `topic`; read with `was_first`.

    The key stores where the event was first read (`partition:offset[:index]`). Reading that same
    position again (a replay after a crash, before the offset was committed) is not a duplicate,
    so at-least-once redelivery never loses an event.

    The event id is hashed in the key: sources build ids from what they know (a CRM export's
    `crm-<member id>-v7`), and Redis must hold nothing that names an erased member.
    `window_s`: history records (`storepulse import`) are remembered longer, so importing the
    same file again within STOREPULSE_IMPORT_DEDUP_S changes nothing."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=12).hexdigest()
    pipe.set(
        key(settings, "dedup", f"{topic}:{digest}"),
        position.encode(),
        nx=True,
        get=True,
        ex=window_s or settings.dedup_window_s,
    )


def was_first(reply: Any, position: str) -> bool:
    return reply is None or as_bytes(reply).decode() == position
