"""Runs the stall watch (partition_watch) every few seconds on each worker."""

from __future__ import annotations

from app import current
from faust_ext import gap_guard
from faust_ext.partition_watch import PartitionWatch
from state.redis_store import health as redis_health

app, settings = current()

watch = PartitionWatch(
    app,
    settings.stall_after_s,
    excuse=lambda: "redis down" if redis_health["redis"] == "down" else None,
)


@app.timer(interval=max(1.0, min(5.0, settings.stall_after_s / 4)))
async def watch_partitions() -> None:
    if watch.ready() and (skipped := gap_guard.policy.take_rereads()):
        await watch.reread(skipped)
    if await watch.check():
        await watch.repair()
