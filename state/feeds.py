"""Store feed health: when each store's sensors and tills last sent an event, shared by workers.

Ingest sees a store's events on whichever partitions their keys land on, so each worker records
what it saw in Redis with its batch's pipeline (one command per store and source in the batch):
`sp:feed` holds the latest event time per `store|source`, and `sp:feed:<minute>` the count per
minute (kept two minutes). A feed is `silent` when a store in its opening hours has sent nothing
from it for `feed_silent_after` (store registry). Operational data, not rebuilt after a loss of
Redis: the next events fill it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.settings import Settings
from state.redis_store import as_bytes
from state.stores import Store

UNKNOWN = "unknown"  # one label value for every store the registry does not know
_LATEST = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > old then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], 120)
return 0
"""


def keys(settings: Settings, minute: int) -> tuple[str, str]:
    base = f"{settings.redis_prefix}:feed"
    return base, f"{base}:{minute}"


def store_label(store_id: str | None, stores: Mapping[str, Store]) -> str:
    """A store the registry knows, or `unknown` (metric labels stay bounded)."""
    return store_id if store_id is not None and store_id in stores else UNKNOWN


def queue_feeds(
    pipe: Any, settings: Settings, seen: Mapping[tuple[str, str], tuple[int, int]], now_ms: int
) -> None:
    """Queue, per (store, source) of a batch: (events, latest event time in ms)."""
    latest, per_minute = keys(settings, now_ms // 60_000)
    for (store, source), (count, last) in seen.items():
        pipe.eval(_LATEST, 2, latest, per_minute, f"{store}|{source}", last, count)


async def health(
    redis: Any, settings: Settings, stores: Mapping[str, Store], now_ms: int
) -> list[dict[str, Any]]:
    """Every registry store and feed: last event, age, events in the last full minute, open,
    silent."""
    latest_key, minute_key = keys(settings, now_ms // 60_000 - 1)
    latest, minute = await redis.hgetall(latest_key), await redis.hgetall(minute_key)

    def field(raw: Mapping[Any, Any], name: str) -> int | None:
        value = raw.get(name.encode())
        return int(as_bytes(value)) if value is not None else None

    out = []
    for store in stores.values():
        is_open = store.is_open(now_ms)
        for source in store.feeds:
            last = field(latest, f"{store.id}|{source}")
            age = (now_ms - last) / 1000 if last is not None else None
            silent = is_open and (age is None or age * 1000 > store.feed_silent_after_ms)
            out.append(
                {
                    "store": store.id,
                    "source": source,
                    "last_event_at": last,
                    "age_s": round(age, 1) if age is not None else None,
                    "events_last_minute": field(minute, f"{store.id}|{source}") or 0,
                    "open": is_open,
                    "silent": silent,
                }
            )
    return out
