"""At most one delivery per action id, shared by all workers through Redis.

An action is first *claimed* (`claimed:<ms>`), then marked with its final outcome. A claim left
by a worker that crashed mid-send is taken over once it is older than `claim_timeout_ms`, so a
crash never loses an action; a live worker's fresh claim is waited for, so a rebalance never
sends one twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

import redis.asyncio as aioredis

from core.settings import Settings
from state.redis_store import as_bytes, key, queue_release

_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
logger = logging.getLogger("storepulse.idempotency")
FINAL = (b"sent", b"failed", b"suppressed")


async def claim(
    redis: aioredis.Redis, settings: Settings, action_id: str, claim_timeout_ms: int = 20_000
) -> Literal["new", "done"]:
    k = key(settings, "act", action_id)
    while True:
        now = int(time.time() * 1000)
        mine = f"claimed:{now}".encode()
        if await redis.set(k, mine, nx=True, ex=settings.idempotency_ttl_s):
            return "new"
        current = await redis.get(k)
        if current is None:
            continue
        if as_bytes(current) in FINAL:
            return "done"
        claimed_at = int(as_bytes(current).split(b":")[1])
        if now - claimed_at > claim_timeout_ms and await redis.eval(
            _TAKE_OVER, 1, k, current, mine, settings.idempotency_ttl_s
        ):
            return "new"  # the previous claimant died before it could finish
        await asyncio.sleep(0.2)


_RENEW = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 8) == 'claimed:' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""


async def renew(redis: aioredis.Redis, settings: Settings, action_id: str) -> None:
    """Keep a delivery in progress (queued behind a rate limit, retrying, an open circuit) from
    looking abandoned. Only a claim is renewed: a final outcome is never overwritten."""
    now = int(time.time() * 1000)
    await redis.eval(
        _RENEW, 1, key(settings, "act", action_id), f"claimed:{now}", settings.idempotency_ttl_s
    )


async def hold(
    redis: aioredis.Redis, settings: Settings, action_id: str, claim_timeout_ms: int
) -> None:
    """Renew the claim every third of the timeout until cancelled: a live worker's claim is
    never taken over, however long its delivery waits; a dead worker's is, after the timeout."""
    while True:
        await asyncio.sleep(claim_timeout_ms / 3000)
        try:
            await renew(redis, settings, action_id)
        except Exception as exc:  # Redis away: the delivery waits for it too; next round
            logger.info("claim renewal for %s failed (%s); retrying", action_id, exc)


async def finish(
    redis: aioredis.Redis,
    settings: Settings,
    action_id: str,
    outcome: Literal["sent", "failed", "suppressed"],
) -> None:
    await redis.set(
        key(settings, "act", action_id), outcome.encode(), ex=settings.idempotency_ttl_s
    )


async def finish_many(
    redis: aioredis.Redis,
    settings: Settings,
    marks: list[tuple[str, Literal["sent", "failed", "suppressed"]]],
) -> None:
    """`finish` for several actions in one pipeline."""
    pipe = redis.pipeline(transaction=False)
    for action_id, outcome in marks:
        pipe.set(key(settings, "act", action_id), outcome.encode(), ex=settings.idempotency_ttl_s)
    await pipe.execute()


def claim_value() -> bytes:
    return f"claimed:{int(time.time() * 1000)}".encode()


def queue_claims(pipe: Any, settings: Settings, action_ids: list[str], mine: bytes) -> None:
    """Queue one SET NX per action (the fast path of `claim`) on an epoch-checked pipeline."""
    for action_id in action_ids:
        pipe.set(key(settings, "act", action_id), mine, nx=True, ex=settings.idempotency_ttl_s)


async def release_claims(
    redis: aioredis.Redis,
    settings: Settings,
    action_ids: list[str],
    replies: list[Any],
    mine: bytes,
) -> None:
    """Undo the claims `queue_claims` made (those whose SET NX succeeded and still hold `mine`)."""
    pipe = redis.pipeline(transaction=False)
    for action_id, got in zip(action_ids, replies, strict=False):
        if got:
            queue_release(pipe, key(settings, "act", action_id), mine)
    await pipe.execute()


async def settle_claims(
    redis: aioredis.Redis,
    settings: Settings,
    action_ids: list[str],
    replies: list[Any],
    claim_timeout_ms: int,
) -> dict[str, Literal["new", "done"]]:
    """What `queue_claims` replied, with the per-action path for the few already claimed (a
    replay, or a dead worker's claim to take over)."""
    out: dict[str, Literal["new", "done"]] = {}
    for action_id, got in zip(action_ids, replies, strict=True):
        out[action_id] = "new" if got else await claim(redis, settings, action_id, claim_timeout_ms)
    return out


async def hold_many(
    redis: aioredis.Redis, settings: Settings, action_ids: list[str], claim_timeout_ms: int
) -> None:
    """`hold` for a batch's claims, renewed together (one pipeline per round)."""
    while True:
        await asyncio.sleep(claim_timeout_ms / 3000)
        try:
            now = int(time.time() * 1000)
            pipe = redis.pipeline(transaction=False)
            for action_id in action_ids:
                pipe.eval(
                    _RENEW,
                    1,
                    key(settings, "act", action_id),
                    f"claimed:{now}",
                    settings.idempotency_ttl_s,
                )
            await pipe.execute()
        except Exception as exc:  # Redis away: the deliveries wait for it too; next round
            logger.info("claim renewal for %d actions failed (%s); retrying", len(action_ids), exc)
