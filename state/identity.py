"""OneID: resolves the identifiers an event carries to one member id, through Redis."""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from settings import Settings
from state.redis_store import key

# Identifier kinds in the order they are trusted when an event carries several.
KINDS = ("member_id", "app_device_id", "openid")


def anonymous_id(kind: str, value: str) -> str:
    """A stable id for a visitor we cannot name yet: the same device always maps to it."""
    return "anon-" + hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:20]


async def resolve_member(
    redis: aioredis.Redis, settings: Settings, identifiers: dict[str, str]
) -> str:
    """member_id if given; else the member an identifier is linked to; else an anonymous id."""
    if identifiers.get("member_id"):
        return identifiers["member_id"]
    present = [(k, identifiers[k]) for k in KINDS[1:] if identifiers.get(k)]
    if present:
        keys = [key(settings, "id", f"{k}:{v}") for k, v in present]
        for found in await redis.mget(keys):
            if found:
                return bytes(found).decode()
        return anonymous_id(*present[0])
    raise ValueError("event has no identifier")  # validation guarantees one; keep the invariant


async def link(
    redis: aioredis.Redis, settings: Settings, kind: str, value: str, member_id: str
) -> bool:
    """Bind an identifier to a member if it is not bound yet; returns False on a conflict."""
    ok = await redis.set(key(settings, "id", f"{kind}:{value}"), member_id.encode(), nx=True)
    if ok:
        return True
    current = await redis.get(key(settings, "id", f"{kind}:{value}"))
    return current is not None and bytes(current).decode() == member_id
