"""Duplicate `event_id`s within a window, shared by all workers through Redis."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from core.settings import Settings
from state.redis_store import as_bytes, key


async def first_seen(
    redis: aioredis.Redis, settings: Settings, topic: str, event_id: str, position: str
) -> bool:
    """True unless `event_id` was already accepted from another record of `topic`.

    The key stores where the event was first read (`partition:offset`). Reading that same record
    again (a replay after a crash, before the offset was committed) is not a duplicate, so
    at-least-once redelivery never loses an event.
    """
    previous = await redis.set(
        key(settings, "dedup", f"{topic}:{event_id}"),
        position.encode(),
        nx=True,
        get=True,
        ex=settings.dedup_window_s,
    )
    return was_first(previous, position)


def queue_first_seen(
    pipe: Any, settings: Settings, topic: str, event_id: str, position: str
) -> None:
    """`first_seen` queued on a pipeline (a batch's one round trip); read with `was_first`."""
    pipe.set(
        key(settings, "dedup", f"{topic}:{event_id}"),
        position.encode(),
        nx=True,
        get=True,
        ex=settings.dedup_window_s,
    )


def was_first(reply: Any, position: str) -> bool:
    return reply is None or as_bytes(reply).decode() == position
