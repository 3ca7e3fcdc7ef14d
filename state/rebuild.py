"""Rebuild Redis from what Kafka holds, after Redis lost its data set (state/epoch.py).

The source of truth of each Redis view is a topic:

- identity bindings: `identity-bindings`, compacted, one record per identifier (key
  `kind:value`, value the member it is bound to), written by the edge for every new link, with
  a tombstone for an unbinding or an erasure. Its records are put back in order with SET NX, so
  the first binding still wins, and a tombstone deletes what came before it; each member's
  index of identifiers (state/member_data.py) with them;
- coupon pools: `coupon-codes`, compacted, one record per code (key: the code), written and
  acknowledged *before* the pool is charged (`reserved`), and `refused` when the pool had none
  left. The issued count is the number of codes reserved and not refused (never less than what
  Redis still says); codes recorded on `deliveries` are put back in the pool's code hash, so a
  replay of those actions gets its code again. A code in flight when Redis was lost is counted,
  and counted again when its batch charges the pool anew: a loss can make a pool give a few
  coupons too few, never one too many. Each configured pool's budget is set again from
  config/coupons.yaml;
- delivery marks: `deliveries` of the last `STOREPULSE_REBUILD_MARKS_S` (a day by default; replays
  come from uncommitted offsets, seconds to minutes old), each action's final outcome;
- erasure marks (state/member_data.py): the erasures on `member-audit` (kept for good) within a
  mark's lifetime, each set again for what is left of it, so an action of an erased member still
  in flight is not sent after Redis was lost.

De-duplication keys are not rebuilt (they are a 24 h window over the inputs): sales are also
counted once per (store, receipt) in member state, and the member replay guard and the delivery
marks keep a repeated check-in from sending twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis

from contracts.batches import unpack
from core.settings import Settings
from state import coupons
from state.member_data import erased_mark_s, index_key, mark_key
from state.redis_store import key
from state.topic_reads import read_records

logger = logging.getLogger("storepulse.rebuild")


def _decode(value: bytes | None) -> Any:
    try:
        return orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None


async def reindex(redis: aioredis.Redis, settings: Settings) -> int:
    """Put every binding on `identity-bindings` into its member's index (state/member_data.py),
    for bindings made before the index existed; returns how many were read. The latest record
    of each identifier counts (a tombstone: none), so an unbound one is not indexed again."""
    latest: dict[bytes, str | None] = {}

    def keep(records: list[Any]) -> None:
        for r in records:
            if r.key:
                body = _decode(r.value)
                owner = body.get("member_id") if isinstance(body, dict) else None
                latest[r.key] = owner if isinstance(owner, str) else None

    await read_records(settings, settings.topic_prefix + "identity-bindings", keep)
    pairs = [(k, m) for k, m in latest.items() if m is not None]
    for lo in range(0, len(pairs), 2000):
        pipe = redis.pipeline(transaction=False)
        for ident, member in pairs[lo : lo + 2000]:
            pipe.sadd(index_key(settings, member), ident)
        await pipe.execute()
    return len(pairs)


async def restore_erasure_marks(redis: aioredis.Redis, settings: Settings) -> int:
    """Set again the mark of every erasure on `member-audit` younger than a mark's lifetime,
    with the lifetime it has left; returns how many."""
    lifetime = erased_mark_s(settings)
    now = int(time.time() * 1000)
    left: dict[str, int] = {}

    def erasures(records: list[Any]) -> None:
        for r in records:
            body = _decode(r.value)
            if not isinstance(body, dict) or body.get("change") != "erasure":
                continue
            at, hashed = body.get("at"), body.get("member")
            if isinstance(at, int) and isinstance(hashed, str):
                seconds = lifetime - (now - at) // 1000
                if seconds > 0:
                    left[hashed] = max(left.get(hashed, 0), seconds)

    since = now - lifetime * 1000
    await read_records(settings, settings.topic_prefix + "member-audit", erasures, since_ms=since)
    pipe = redis.pipeline(transaction=False)
    for hashed, seconds in left.items():
        pipe.set(mark_key(settings, hashed), b"1", ex=seconds)
    await pipe.execute()
    return len(left)


async def rebuild(redis: aioredis.Redis, settings: Settings) -> dict[str, int]:
    """Put back what Kafka knows; returns counts of what was read and written."""
    counts = {"bindings": 0, "codes": 0, "marks": 0, "erasures": 0}
    prefix = settings.topic_prefix

    async def bindings(records: list[Any]) -> None:
        pipe = redis.pipeline(transaction=False)
        for r in records:  # in offset order per partition, where all of a key's records are
            if r.key and r.value is None:  # unbound or erased after it was bound
                pipe.delete(key(settings, "id", r.key.decode()))
                continue
            body = _decode(r.value)
            if r.key and isinstance(body, dict) and isinstance(body.get("member_id"), str):
                ident = r.key.decode()
                pipe.set(key(settings, "id", ident), body["member_id"].encode(), nx=True)
                pipe.sadd(index_key(settings, body["member_id"]), ident.encode())
                counts["bindings"] += 1
        await pipe.execute()

    latest_codes: dict[str, dict[str, Any]] = {}

    async def codes(records: list[Any]) -> None:
        for r in records:
            body = _decode(r.value)
            if r.key and isinstance(body, dict):
                latest_codes[r.key.decode()] = body  # the latest record of a code wins

    ttl = settings.idempotency_ttl_s
    delivered: dict[str, list[dict[str, Any]]] = {}

    async def marks(records: list[Any]) -> None:
        pipe = redis.pipeline(transaction=False)
        for r in records:
            try:
                items = unpack(r.value)
            except orjson.JSONDecodeError:
                continue
            for d in items:
                if isinstance(d, dict) and d.get("outcome") in ("sent", "failed", "suppressed"):
                    pipe.set(
                        key(settings, "act", str(d["action_id"])), d["outcome"].encode(), ex=ttl
                    )
                    counts["marks"] += 1
                    coupon = d.get("coupon")
                    if isinstance(coupon, dict):  # a code that certainly went out
                        delivered.setdefault(str(coupon.get("pool")), []).append(
                            {"action_id": d["action_id"], "code": coupon.get("code")}
                        )
        await pipe.execute()

    await read_records(settings, prefix + "identity-bindings", bindings)
    since = int(time.time() * 1000) - settings.rebuild_marks_s * 1000
    await read_records(settings, prefix + "deliveries", marks, since_ms=since)
    await read_records(settings, prefix + "coupon-codes", codes)
    counts["erasures"] = await restore_erasure_marks(redis, settings)
    reserved: dict[str, int] = {}
    owners: dict[str, list[tuple[str, str]]] = {}  # who each code was issued to
    for code, body in latest_codes.items():
        if body.get("status") == "reserved" and isinstance(body.get("pool"), str):
            reserved[body["pool"]] = reserved.get(body["pool"], 0) + 1
            if isinstance(body.get("member_id"), str):
                owners.setdefault(body["pool"], []).append((code, body["member_id"]))
    pools = coupons.load_pools(settings.coupons_path)
    for pool in sorted(set(reserved) | set(delivered) | set(pools)):
        counts["codes"] += reserved.get(pool, 0)
        await coupons.restore(
            redis,
            settings,
            pool,
            pools.get(pool),
            reserved.get(pool, 0),
            delivered.get(pool, []),
            owners.get(pool, []),
        )
    return counts


def rebuilder(redis: aioredis.Redis, settings: Settings) -> Callable[[], Awaitable[dict[str, int]]]:
    async def run() -> dict[str, int]:
        return await asyncio.wait_for(rebuild(redis, settings), settings.rebuild_timeout_s)

    return run
