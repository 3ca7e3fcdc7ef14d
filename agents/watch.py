"""Runs the stall watch (partition_watch) every few seconds on each worker, and tells /health
whether Redis answers from the start (not `unknown` until the first event needs it), and adopts
Redis's data set (or rebuilds it from Kafka: state/epoch.py) before the first batch."""

from __future__ import annotations

from app import current
from faust_ext import gap_guard
from faust_ext.partition_watch import PartitionWatch
from state import epoch
from state.redis_store import health as redis_health
from state.redis_store import redis_client, with_redis

app, settings = current()

watch = PartitionWatch(
    app,
    settings.stall_after_s,
    excuse=lambda: (
        "redis down"
        if redis_health["redis"] == "down"
        else "redis rebuilding"
        if redis_health.get("epoch") in ("checking", "rebuilding")
        else None
    ),
)


@app.timer(interval=max(1.0, min(5.0, settings.stall_after_s / 4)))
async def watch_partitions() -> None:
    if watch.ready() and (skipped := gap_guard.policy.take_rereads()):
        await watch.reread(skipped)
    if await watch.check():
        await watch.repair()


@app.task
async def ping_redis_at_start() -> None:
    client = redis_client(settings)
    await with_redis(lambda: client.ping(), "start-up check")
    # adopt the data set, or rebuild it from Kafka, before the first batch needs it
    await epoch.shared(settings).start()
