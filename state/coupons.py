"""Coupon pools: unique codes within an atomic budget in Redis, one code per action for good.

The pool's three keys share the `{pool}` hash tag, so the script stays valid on Redis Cluster.
Issuing is idempotent per action: a replay after a crash gets the same code and spends nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import cache
from pathlib import Path

import redis.asyncio as aioredis
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.settings import Settings

_ISSUE = """
local code = redis.call('HGET', KEYS[2], ARGV[1])
if code then return code end
local budget = tonumber(redis.call('GET', KEYS[3]) or '0')
local issued = tonumber(redis.call('GET', KEYS[1]) or '0')
if issued >= budget then return false end
redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
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
    tag = f"{settings.redis_prefix}:pool:{{{pool}}}"
    return [f"{tag}:issued", f"{tag}:codes", f"{tag}:budget"]


def code_for(settings: Settings, pool: str, prefix: str, action_id: str) -> str:
    """Unguessable and stable per action (keyed hash), readable at a till."""
    digest = hmac.new(
        settings.hash_secret.encode(), f"coupon:{pool}:{action_id}".encode(), hashlib.sha256
    ).digest()
    return f"{prefix}-{base64.b32encode(digest[:8]).decode()[:12]}"


async def ensure_budgets(redis: aioredis.Redis, settings: Settings, pools: dict[str, Pool]) -> None:
    """Set each pool's budget once (an existing budget is an operator's decision: kept)."""
    for name, pool in pools.items():
        await redis.set(_keys(settings, name)[2], pool.budget, nx=True)


async def issue_many(
    redis: aioredis.Redis,
    settings: Settings,
    pools: dict[str, Pool],
    wanted: list[tuple[str, str]],
) -> tuple[dict[str, str | None], dict[str, int]]:
    """The codes of a batch's (pool, action id) pairs, in one pipeline, with what each pool has
    left after them: ({action id: code or None: unknown pool or budget spent}, {pool: left}).
    Idempotent per action: a replay gets the same code and spends nothing."""
    codes: dict[str, str | None] = {}
    known = [(pool, action_id) for pool, action_id in wanted if pool in pools]
    for pool, action_id in wanted:
        if pool not in pools:
            codes[action_id] = None  # an unknown pool gives nothing: money fails closed
    if not known:
        return codes, {}
    pipe = redis.pipeline(transaction=False)
    for pool, action_id in known:
        code = code_for(settings, pool, pools[pool].prefix, action_id)
        pipe.eval(_ISSUE, 3, *_keys(settings, pool), action_id, code)
    names = sorted({pool for pool, _ in known})
    for pool in names:
        issued, _, budget = _keys(settings, pool)
        pipe.mget([issued, budget])
    replies = await pipe.execute()
    for (_, action_id), code in zip(known, replies, strict=False):
        codes[action_id] = bytes(code).decode() if code else None
    left = {
        pool: int(values[1] or 0) - int(values[0] or 0)
        for pool, values in zip(names, replies[len(known) :], strict=True)
    }
    return codes, left
