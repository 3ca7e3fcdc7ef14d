"""state/epoch.py against a real redis-server: a loss is noticed once, by the batch that meets
it, however many batches run at once, and concurrent batches never look like a loss."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.settings import Settings
from infra.redis_server import RedisServer
from state.epoch import Epoch


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path / "redis", persistent=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class Rebuilds:
    """Counts rebuilds and leaves a mark in the data set, as the real rebuild leaves keys."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis, self.count = redis, 0

    async def __call__(self) -> dict[str, int]:
        self.count += 1
        await self.redis.set("rebuilt", self.count)
        return {"n": self.count}


async def test_a_flush_is_noticed_once_and_concurrent_batches_are_not_a_loss(redis_url: str):
    redis = aioredis.Redis.from_url(redis_url)
    settings = Settings.from_env({"REDIS_URL": redis_url})
    rebuilds = Rebuilds(redis)
    epoch = Epoch(redis, settings, rebuilds)
    await epoch.start()
    assert rebuilds.count == 1  # an empty Redis at start: built once

    async def batch(n: int) -> list[object]:
        return await epoch.run(lambda pipe: pipe.set(f"k{n}", n), f"batch {n}")

    for _ in range(5):  # 50 batches at once, replies arriving in any order
        assert all(r == [True] for r in await asyncio.gather(*(batch(n) for n in range(50))))
    assert rebuilds.count == 1

    await redis.flushall()
    released: list[list[object]] = []

    async def undo(replies: list[object]) -> None:
        released.append(replies)
        await redis.delete("claim")  # what the dispatcher's undo does with its claims

    replies = await epoch.run(lambda pipe: pipe.set("claim", 1, nx=True), "claim", undo)
    assert rebuilds.count == 2 and released == [[True]]  # the claim on the lost set was undone
    assert replies == [True] and await redis.get("rebuilt") == b"2"
    assert epoch.state()["last_rebuild"]["n"] == 2

    # a replica that missed this worker's writes: same epoch, a lower counter
    await redis.set(epoch.seq_key, 1)
    await batch(0)
    assert rebuilds.count == 3

    # another worker rebuilt (a new epoch): adopted without a rebuild of its own
    theirs = Rebuilds(redis)
    other = Epoch(redis, settings, theirs)
    await other.start()
    await redis.set(epoch.epoch_key, b"someone-else")
    await other.run(lambda pipe: pipe.get("x"), "read")
    assert other.known == b"someone-else" and theirs.count == 0
    await redis.aclose()
