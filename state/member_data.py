"""Member data rights in Redis: which identifiers a member holds, unbinding one, erasing all.

Every new link adds its identifier to the member's index `sp:mid:{member}` (a set of
`kind:value`, hashed values where the kind is hashed), in the link's own pipeline; the rebuild
(state/rebuild.py) puts the index back with the bindings. Unbinding and erasure delete a binding
only while it still names the member (compare-and-delete), and bump `sp:idgen`, which every edge
worker reads with its batch's lookups: a change empties their identity caches, so an unbound
identifier resolves as new on every worker from its next batch.

An erasure also leaves a mark, `sp:erased:{keyed hash}` for ERASED_MARK_DAYS (at least the
retention of `member-events`): actions of the member still in flight (an `actions` record not yet
dispatched, a batch replayed from its last committed offset) are suppressed by dispatch, not
sent to someone who left. The mark names the member only by the keyed hash audit records use;
a rebuild after Redis lost its data puts the marks back from the erasures on `member-audit`
(state/rebuild.py), each for what is left of its lifetime.

Unsubscribe links are signed per member and channel (HMAC with the hash secret): they work
without an API key and cannot be forged for another member or channel.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

import redis.asyncio as aioredis

from core.settings import Settings
from state.coupons import pool_keys
from state.identity import Identifier, keyed_hash
from state.redis_store import RELEASE, as_bytes, key


def index_key(settings: Settings, member_id: str) -> str:
    return key(settings, "mid", member_id)


def generation_key(settings: Settings) -> str:
    return f"{settings.redis_prefix}:idgen"


def identity_key(settings: Settings, ident: str) -> str:
    return key(settings, "id", ident)


ERASED_MARK_DAYS = 7.0  # the default retention of `actions` (Kafka's 7 days)


def erased_key(settings: Settings, member_id: str) -> str:
    return mark_key(settings, member_hash(settings, member_id))


def mark_key(settings: Settings, hashed: str) -> str:
    """The erasure mark of a member known by its keyed hash (as `member-audit` names them)."""
    return key(settings, "erased", hashed)


def erased_mark_s(settings: Settings) -> int:
    return int(max(ERASED_MARK_DAYS, settings.retention_member_events_days) * 86_400)


async def erased_among(
    redis: aioredis.Redis, settings: Settings, member_ids: list[str]
) -> set[str]:
    """The members of `member_ids` erased within the mark's lifetime (one MGET)."""
    if not member_ids:
        return set()
    marks = await redis.mget([erased_key(settings, m) for m in member_ids])
    return {m for m, mark in zip(member_ids, marks, strict=True) if mark is not None}


def queue_index(pipe: Any, settings: Settings, member_id: str, idents: list[Identifier]) -> None:
    """Queue the indexing of identifiers a link tries to bind (one SADD; a refused one is
    harmless: erasure deletes only bindings that name the member)."""
    if idents:
        pipe.sadd(index_key(settings, member_id), *[f"{k}:{v}".encode() for k, v in idents])


async def unbind(
    redis: aioredis.Redis, settings: Settings, member_id: str, idents: list[Identifier]
) -> list[Identifier]:
    """Remove the bindings of `idents` that name `member_id`; returns those removed."""
    if not idents:
        return []
    pipe = redis.pipeline(transaction=False)
    names = [f"{k}:{v}" for k, v in idents]
    for name in names:
        pipe.eval(RELEASE, 1, identity_key(settings, name), member_id.encode())
    pipe.srem(index_key(settings, member_id), *[n.encode() for n in names])
    pipe.incr(generation_key(settings))
    replies = await pipe.execute()
    return [i for i, removed in zip(idents, replies, strict=False) if removed]


async def erase(redis: aioredis.Redis, settings: Settings, member_id: str) -> list[str]:
    """Remove every binding of the member and its index; returns the identifiers (kind:value)
    whose binding was removed."""
    names = sorted(
        as_bytes(m).decode() for m in await redis.smembers(index_key(settings, member_id))
    )
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.eval(RELEASE, 1, identity_key(settings, name), member_id.encode())
    pipe.delete(index_key(settings, member_id))
    pipe.set(erased_key(settings, member_id), b"1", ex=erased_mark_s(settings))
    pipe.incr(generation_key(settings))
    replies = await pipe.execute()
    return [n for n, removed in zip(names, replies, strict=False) if removed]


async def erase_coupons(
    redis: aioredis.Redis, settings: Settings, member_id: str, pools: list[str]
) -> list[tuple[str, str, str]]:
    """Take the member out of every pool's code owners (HSCAN: erasure is rare, pools hold up
    to millions of codes); returns (pool, code, action id) of each code that was theirs, for
    their `coupon-codes` records to be rewritten without the id."""
    found: list[tuple[str, str, str]] = []
    me = member_id.encode()
    for pool in pools:
        _, codes_key, _, owners_key = pool_keys(settings, pool)
        mine = [
            as_bytes(code)
            async for code, owner in redis.hscan_iter(owners_key, count=1000)
            if as_bytes(owner) == me
        ]
        if not mine:
            continue
        await redis.hdel(owners_key, *mine)
        wanted = set(mine)
        async for action, code in redis.hscan_iter(codes_key, count=1000):
            if as_bytes(code) in wanted:
                found.append((pool, as_bytes(code).decode(), as_bytes(action).decode()))
    return found


def member_hash(settings: Settings, member_id: str) -> str:
    """What audit records name a member by: stable for look-ups, not the id itself."""
    return keyed_hash(settings.hash_secret, "member", member_id)


def unsubscribe_signature(settings: Settings, member_id: str, channel: str) -> str:
    message = f"unsubscribe\x1f{member_id}\x1f{channel}".encode()
    return hmac.new(settings.hash_secret.encode(), message, hashlib.sha256).hexdigest()[:32]


def unsubscribe_url(settings: Settings, member_id: str, channel: str) -> str:
    """The link `{unsubscribe_url}` in a message template becomes (STOREPULSE_PUBLIC_URL)."""
    query = urlencode(
        {"m": member_id, "c": channel, "s": unsubscribe_signature(settings, member_id, channel)}
    )
    return f"{settings.public_base_url}/unsubscribe?{query}"


def valid_unsubscribe(settings: Settings, member_id: str, channel: str, signature: str) -> bool:
    expected = unsubscribe_signature(settings, member_id, channel)
    return hmac.compare_digest(expected.encode(), signature.encode())
