"""Runs the stall watch (partition_watch) every few seconds on each worker."""

from __future__ import annotations

from app import app, settings
from partition_watch import PartitionWatch

watch = PartitionWatch(app, settings.stall_after_s)


@app.timer(interval=max(1.0, min(5.0, settings.stall_after_s / 4)))
async def watch_partitions() -> None:
    if await watch.check():
        await watch.repair()
