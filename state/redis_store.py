"""The one Redis connection per process, and the naming of every key StorePulse writes."""

from __future__ import annotations

import redis.asyncio as aioredis

from settings import Settings

_clients: dict[str, aioredis.Redis] = {}


def redis_client(settings: Settings) -> aioredis.Redis:
    client = _clients.get(settings.redis_url)
    if client is None:
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
            decode_responses=False,
        )
        _clients[settings.redis_url] = client
    return client


def key(settings: Settings, kind: str, ident: str) -> str:
    """`sp:{kind}:{ident}`-style keys; the braces are a Redis Cluster hash tag on the identity."""
    return f"{settings.redis_prefix}:{kind}:{{{ident}}}"
