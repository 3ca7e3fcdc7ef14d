"""The one Redis connection per process, and the naming of every key StorePulse writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from core.metrics import REDIS_UP
from core.settings import Settings

_clients: dict[str, aioredis.Redis] = {}
logger = logging.getLogger("storepulse.redis")
T = TypeVar("T")
health = {"redis": "unknown"}  # shown on /health: "down" while calls are being retried


def redis_client(settings: Settings) -> aioredis.Redis:
    client = _clients.get(settings.redis_url)
    if client is None:
        # rediss:// with a private CA; ACL users come in the URL (redis://user:pass@host)
        tls: dict[str, Any] = (
            {"ssl_ca_certs": settings.redis_tls_ca} if settings.redis_tls_ca else {}
        )
        client = aioredis.Redis.from_url(
            settings.redis_url,
            socket_timeout=5,
            socket_connect_timeout=5,
            health_check_interval=30,
            decode_responses=False,
            **tls,
        )
        _clients[settings.redis_url] = client
    return client


def as_bytes(value: Any) -> bytes:
    """A reply as bytes (redis-py types replies `bytes | str`; ours never decode)."""
    return value if isinstance(value, bytes) else str(value).encode()


def key(settings: Settings, kind: str, ident: str) -> str:
    """`sp:{kind}:{ident}`-style keys; the braces are a Redis Cluster hash tag on the identity."""
    return f"{settings.redis_prefix}:{kind}:{{{ident}}}"


async def with_redis(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Redis holds shared state: while it is away we wait for it (and say so) rather than guess.

    Nothing is lost meanwhile: the record being processed is simply not finished, so its offset
    is not committed.
    """
    delay = 0.1
    while True:
        try:
            result = await call()
            REDIS_UP.set(1)
            health["redis"] = "up"
            return result
        except (RedisError, OSError) as exc:
            REDIS_UP.set(0)
            health["redis"] = "down"
            logger.warning("Redis unavailable during %s (%r); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def queue_release(pipe: Any, redis_key: str, value: bytes) -> None:
    """Queue the deletion of `redis_key` if it still holds `value` (a claim or a link this
    worker made on a data set that turned out to be lost: state/epoch.py)."""
    pipe.eval(RELEASE, 1, redis_key, value)
