"""Coupon pools: unique codes within an atomic budget in Redis, one code per action for good.

The pool's three keys share the `{pool}` hash tag, so the script stays valid on Redis Cluster.
Issuing is idempotent per action: a replay after a crash gets the same code and spends nothing.
Money fails closed: a pool whose budget or issued count is missing issues nothing (the script
says `unknown`; the dispatcher waits for the rebuild) and is never re-seeded as unspent. Each
code is recorded on `coupon-codes` before its pool is charged, which is what a rebuild counts
(state/rebuild.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.settings import Settings

UNKNOWN = -1  # the pool's budget or issued count is not in Redis: decide nothing
_ISSUE = """
local code = redis.call('HGET', KEYS[2], ARGV[1])
if code then return code end
local budget = redis.call('GET', KEYS[3])
local issued = redis.call('GET', KEYS[1])
if not budget or not issued then return -1 end
if tonumber(issued) >= tonumber(budget) then return false end
redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
return ARGV[2]
"""


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    budget: int = Field(ge=0, le=100_000_000)
    prefix: str = Field(default="SP", pattern=r"^[A-Z0-9]{1,8}$")


class CouponConfigError(ValueError):
    pass


@cache
def load_pools(path: str) -> dict[str, Pool]:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
        return {name: Pool.model_validate(body) for name, body in (raw.get("pools") or {}).items()}
    except (OSError, yaml.YAMLError) as exc:
        raise CouponConfigError(f"{p}: cannot read coupon pools: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise CouponConfigError(
            f"{p}: pools: {'.'.join(map(str, err['loc']))}: {err['msg']}"
        ) from None


def _keys(settings: Settings, pool: str) -> list[str]:
    """issued count, action id -> code, budget, code -> the member it was issued to."""
    tag = f"{settings.redis_prefix}:pool:{{{pool}}}"
    return [f"{tag}:issued", f"{tag}:codes", f"{tag}:budget", f"{tag}:owners"]


def pool_keys(settings: Settings, pool: str) -> list[str]:
    """The pool's Redis keys: issued, codes (action id -> code), budget, owners (code -> member)."""
    return _keys(settings, pool)


def pools_by_prefix(pools: dict[str, Pool]) -> dict[str, list[str]]:
    by: dict[str, list[str]] = {}
    for name, pool in sorted(pools.items()):
        by.setdefault(pool.prefix, []).append(name)
    return by


def queue_owners(
    pipe: Any, settings: Settings, prefixes: dict[str, list[str]], codes: list[str]
) -> list[str]:
    """Queue the look-up of who each code was issued to (one HGET per candidate pool: codes
    carry their pool's prefix); returns the codes in reply order (a code once per pool)."""
    asked = []
    for code in codes:
        for pool in prefixes.get(code.split("-", 1)[0], ()):
            pipe.hget(_keys(settings, pool)[3], code)
            asked.append(code)
    return asked


def read_owners(asked: list[str], replies: list[Any]) -> dict[str, str]:
    owners: dict[str, str] = {}
    for code, reply in zip(asked, replies, strict=True):
        if reply is not None:
            owners[code] = bytes(reply).decode() if isinstance(reply, bytes) else str(reply)
    return owners


def code_for(settings: Settings, pool: str, prefix: str, action_id: str) -> str:
    """Unguessable and stable per action (keyed hash), readable at a till."""
    digest = hmac.new(
        settings.hash_secret.encode(), f"coupon:{pool}:{action_id}".encode(), hashlib.sha256
    ).digest()
    return f"{prefix}-{base64.b32encode(digest[:8]).decode()[:12]}"


def queue_new_pools(pipe: Any, settings: Settings, pools: dict[str, Pool]) -> None:
    """Queue, on an epoch-checked pipeline, the keys of pools that are new to this data set:
    budget from config and nothing issued. An existing budget is an operator's decision: kept.
    (On a data set that turns out lost, the rebuild corrects `issued` upwards from Kafka.)"""
    for name, pool in pools.items():
        issued, _, budget, _ = _keys(settings, name)
        pipe.set(budget, pool.budget, nx=True)
        pipe.set(issued, 0, nx=True)


async def restore(
    redis: aioredis.Redis,
    settings: Settings,
    name: str,
    pool: Pool | None,
    reserved: int,
    delivered: list[dict[str, Any]],
    owners: Sequence[tuple[str, str]] = (),
) -> None:
    """Put a pool back after a loss (state/rebuild.py): the codes known delivered in the code
    hash, who each code recorded on `coupon-codes` was issued to, `issued` = the codes reserved
    on `coupon-codes` and not refused (never lowered), the
    budget from config if missing."""
    issued, codes, budget, owners_key = _keys(settings, name)
    for lo in range(0, len(delivered), 2000):
        pipe = redis.pipeline(transaction=False)
        for body in delivered[lo : lo + 2000]:
            pipe.hsetnx(codes, str(body["action_id"]), str(body["code"]))
        await pipe.execute()
    for lo in range(0, len(owners), 2000):
        pipe = redis.pipeline(transaction=False)
        for code, member in owners[lo : lo + 2000]:
            pipe.hsetnx(owners_key, code, member)
        await pipe.execute()
    held = int(await redis.hlen(codes))
    was = int(await redis.get(issued) or 0)
    await redis.set(issued, max(reserved, held, was))
    if pool is not None:
        await redis.set(budget, pool.budget, nx=True)


Codes = dict[str, str | int | None]  # action id -> code, None (none left) or UNKNOWN


def queue_issues(
    pipe: Any, settings: Settings, pools: dict[str, Pool], wanted: list[tuple[str, str, str]]
) -> Callable[[list[Any]], tuple[Codes, dict[str, tuple[int, int]]]]:
    """Queue, on one pipeline, the issue script for a batch's (pool, action id) pairs and a read
    of each pool's count; returns the reader of those replies: ({action id: code, None: unknown
    pool or budget spent, or UNKNOWN: the pool's count is not in Redis}, {pool: (left, budget)}).
    Idempotent per action: a replay gets the same code and spends nothing."""
    known = [(pool, action_id, member) for pool, action_id, member in wanted if pool in pools]
    names = sorted({pool for pool, _, _ in known})
    for pool, action_id, member in known:
        code = code_for(settings, pool, pools[pool].prefix, action_id)
        pipe.eval(_ISSUE, 4, *_keys(settings, pool), action_id, code, member)
    for pool in names:
        issued, _, budget, _ = _keys(settings, pool)
        pipe.mget([issued, budget])

    def read(replies: list[Any]) -> tuple[Codes, dict[str, tuple[int, int]]]:
        # an unknown pool gives nothing: money fails closed
        codes: Codes = {action_id: None for pool, action_id, _ in wanted if pool not in pools}
        for (_, action_id, _), code in zip(known, replies, strict=False):
            if code == UNKNOWN:
                codes[action_id] = UNKNOWN
            else:
                codes[action_id] = bytes(code).decode() if code else None
        left = {  # (left, budget): the budget in Redis, an operator's change included
            pool: (int(values[1] or 0) - int(values[0] or 0), int(values[1] or 0))
            for pool, values in zip(names, replies[len(known) :], strict=True)
        }
        return codes, left

    return read
