"""Runs the stall watch (partition_watch) every few seconds on each worker, and tells /health
whether Redis answers from the start (not `unknown` until the first event needs it), and adopts
Redis's data set (or rebuilds it from Kafka: state/epoch.py) before the first batch."""

from __future__ import annotations

import time

from app import current
from core.metrics import STORE_OPEN, STORE_SILENT_AFTER
from faust_ext import gap_guard
from faust_ext.partition_watch import PartitionWatch
from state import epoch
from state.redis_store import health as redis_health
from state.redis_store import redis_client, with_redis
from state.stores import load_stores

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


@app.timer(interval=30.0)
async def store_hours() -> None:
    """Which stores are open now, for the feed-silence alert (deploy/prometheus/alerts.yml)."""
    now = int(time.time() * 1000)
    for store in load_stores(settings.stores_path).values():
        STORE_OPEN.labels(store.id).set(1 if store.is_open(now) else 0)
        STORE_SILENT_AFTER.labels(store.id).set(store.feed_silent_after_ms / 1000)
