"""Know when Redis forgot, and bring back what Kafka knows before anything is decided on it.

Redis is a view (DESIGN: "Redis is a fast, rebuildable view of what Kafka knows"). A FLUSHALL, a
failover to a lagging replica, an eviction or a server started on an empty disk all look like a
healthy Redis that answers every call, with wrong answers: identifiers unbound, actions never
sent, budgets unspent. So every batch script that decides on Redis runs inside `Epoch.run`:

- its pipeline starts with `GET sp:epoch` (a random id written when the data set was built) and
  ends with `INCR sp:epoch:seq`. The batch's replies count only if the id is the one this worker
  adopted and the counter is above what this worker had seen when it sent the batch: a flush
  before or during the pipeline leaves no id or restarts the counter, and a replica missing this
  worker's last writes has a lower counter;
- otherwise the replies are thrown away (`undo` releases what the pipeline claimed), the loss is
  counted, shown on /health and logged, and the batch waits while one worker (a lock in Redis)
  rebuilds the data set from Kafka (state/rebuild.py) and writes a new id. Every other worker
  adopts that id when it next runs a batch script. What does not decide on Redis (the member
  agent, state and trigger evaluation) goes on meanwhile; inputs wait in Kafka, nothing is lost.

At start, a missing id means a new or emptied Redis: the worker rebuilds before its first batch
(on a new cluster the topics are empty and this takes milliseconds).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from core.metrics import REDIS_EPOCH_CHANGES, REDIS_REBUILD_SECONDS, REDIS_REBUILDING
from core.settings import Settings
from state.redis_store import as_bytes, health, with_redis

logger = logging.getLogger("storepulse.epoch")
Rebuild = Callable[[], Awaitable[dict[str, int]]]
LOCK_S = 30  # the rebuilding worker renews its lock every LOCK_S / 3; a dead one's expires


def keys(settings: Settings) -> tuple[str, str, str]:
    """(epoch id, write counter, rebuild lock)."""
    base = f"{settings.redis_prefix}:epoch"
    return base, f"{base}:seq", f"{base}:rebuild"


class Epoch:
    """One per worker process: the data set this worker decides on, and its recovery."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, rebuild: Rebuild) -> None:
        self.redis = redis
        self.settings = settings
        self.rebuild = rebuild
        self.epoch_key, self.seq_key, self.lock_key = keys(settings)
        self.known: bytes | None = None  # the id adopted; None before the first adoption
        self.seq = 0  # the highest counter value this worker has seen
        self.adopted_seq = 0  # the counter when this worker adopted the data set
        self.recovery: asyncio.Task[None] | None = None
        self.last_rebuild: dict[str, Any] = {}
        self.token = uuid.uuid4().hex.encode()  # this worker's rebuild lock

    def state(self) -> dict[str, Any]:
        """For /health."""
        return {
            "epoch": self.known.decode() if self.known else None,
            "rebuilding": self.recovery is not None and not self.recovery.done(),
            "last_rebuild": self.last_rebuild,
        }

    async def start(self) -> None:
        """Adopt Redis's data set, or rebuild it from Kafka, unless this worker already has."""
        if self.known is None:
            await self.recover(None, None)

    async def run(
        self,
        build: Callable[[Any], None],
        what: str,
        undo: Callable[[list[Any]], Awaitable[None]] | None = None,
    ) -> list[Any]:
        """Replies of the commands `build(pipe)` queues, run on the data set this worker knows.

        `undo(replies)` is called with the replies of a run that found the data set changed,
        before the rebuild is waited for: it must release what those commands claimed (claims
        that would otherwise look like another worker's). The commands must be safe to run
        again (SET NX, idempotent scripts): after a rebuild they are."""
        while True:
            if self.known is None or (self.recovery is not None and not self.recovery.done()):
                await self.recover(None, "before the first batch" if self.known is None else what)
                continue

            async def execute() -> list[Any]:
                pipe = self.redis.pipeline(transaction=False)
                pipe.get(self.epoch_key)
                build(pipe)
                pipe.incr(self.seq_key)
                return list(await pipe.execute())

            # Batches run concurrently: one sent earlier may reply with a lower count than one
            # sent later. Any count at or below what was seen before *this* one was sent means
            # writes were lost.
            # A call that waited out an outage may have seen this worker adopt a rebuilt data set
            # meanwhile: then the floor is the counter at that adoption.
            known, before = self.known, self.seq
            replies = await with_redis(execute, what)
            epoch, body, seq = replies[0], replies[1:-1], int(replies[-1])
            seen = as_bytes(epoch) if epoch is not None else None
            if self.known != known:
                before = self.adopted_seq
            if seen == self.known and seq > before:
                self.seq = max(self.seq, seq)
                return body
            if undo is not None:
                await with_redis(functools.partial(undo, body), f"{what} (undo)")
            if seen == self.known:
                why = f"write counter went back from {before} to {seq}: writes were lost"
            elif seen is None:
                why = "its epoch key is gone: the data set was flushed or replaced by an empty one"
            else:
                why = f"its epoch is now {seen.decode()} (rebuilt by another worker, or swapped)"
            await self.recover(seen, f"Redis forgot during {what}: {why}")

    async def recover(self, seen: bytes | None, why: str | None) -> None:
        """Wait until this worker has adopted a data set that is whole again (one task per
        process, however many batches noticed)."""
        if self.recovery is None or self.recovery.done():
            self.recovery = asyncio.create_task(self._recover(seen, why))
        await asyncio.shield(self.recovery)

    async def _recover(self, seen: bytes | None, why: str | None) -> None:
        lost = self.known  # the id whose data set is in doubt (None at start)
        if why is not None and lost is not None:
            REDIS_EPOCH_CHANGES.inc()
            logger.warning("%s; deciding nothing on Redis until it is rebuilt from Kafka", why)
        health["epoch"] = "checking"
        while True:
            try:
                current, locked = await self.redis.mget([self.epoch_key, self.lock_key])
                if current is not None and locked is None and as_bytes(current) != lost:
                    await self._adopt(as_bytes(current))  # rebuilt by another worker, or whole
                    return
                if await self.redis.set(self.lock_key, self.token, nx=True, ex=LOCK_S):
                    await self._rebuild_locked()
                    return
            except Exception as exc:  # Redis away or Kafka unreadable: try again, say so
                logger.warning("Redis recovery waits (%r)", exc)
                await asyncio.sleep(1.0)
                continue
            health["epoch"] = "rebuilding"
            await asyncio.sleep(0.2)  # another worker rebuilds; its new id is adopted

    async def _rebuild_locked(self) -> None:
        health["epoch"] = "rebuilding"
        REDIS_REBUILDING.set(1)
        renewing = asyncio.create_task(self._renew_lock())
        started = time.monotonic()
        try:
            logger.warning("rebuilding Redis from Kafka (identity bindings, coupons, marks)")
            counts = await self.rebuild()
            fresh = uuid.uuid4().hex.encode()
            await with_redis(lambda: self.redis.set(self.epoch_key, fresh), "epoch")
            took = round(time.monotonic() - started, 3)
            REDIS_REBUILD_SECONDS.set(took)
            self.last_rebuild = {**counts, "seconds": took, "at": int(time.time() * 1000)}
            logger.warning("Redis rebuilt from Kafka in %.1f s: %s", took, counts)
            await self._adopt(fresh)
        finally:
            renewing.cancel()
            REDIS_REBUILDING.set(0)
            try:
                if await self.redis.get(self.lock_key) == self.token:
                    await self.redis.delete(self.lock_key)
            except Exception:  # the lock expires by itself
                logger.info("could not release the rebuild lock; it expires in %d s", LOCK_S)

    async def _renew_lock(self) -> None:
        while True:
            await asyncio.sleep(LOCK_S / 3)
            try:
                await self.redis.set(self.lock_key, self.token, xx=True, ex=LOCK_S)
            except Exception as exc:
                logger.info("rebuild lock renewal failed (%r)", exc)

    async def _adopt(self, epoch: bytes) -> None:
        seq = await self.redis.get(self.seq_key)
        self.known, self.seq = epoch, int(seq or 0)
        self.adopted_seq = self.seq
        health["epoch"] = "ok"
        logger.info("deciding on Redis data set %s", epoch.decode())


_epochs: dict[tuple[str, str], Epoch] = {}


def shared(settings: Settings) -> Epoch:
    """The process's Epoch for this Redis and key prefix (ingest and dispatch share it)."""
    from state.rebuild import rebuilder
    from state.redis_store import redis_client

    ident = (settings.redis_url, settings.redis_prefix)
    epoch = _epochs.get(ident)
    if epoch is None:
        redis = redis_client(settings)
        epoch = _epochs[ident] = Epoch(redis, settings, rebuilder(redis, settings))
    return epoch
