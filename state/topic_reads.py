"""A topic's records between two record times, read by a throw-away consumer (no group, nothing
committed): what the Redis rebuild (state/rebuild.py), the backtest and the report
(triggers/replay.py) share."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from core.settings import Settings

Handle = Callable[[list[Any]], Awaitable[None] | None]  # a fetched batch of ConsumerRecords
Progress = Callable[[int, int], None]  # (records read, records in the window)


async def _bounds(
    consumer: AIOKafkaConsumer,
    topic: str,
    since_ms: int | None,
    until_ms: int | None,
    partitions: set[int] | None = None,
) -> dict[TopicPartition, tuple[int, int]]:
    """(first offset, end offset) of each partition's records between the two record times."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()  # a topic created after start
        parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in sorted(parts) if partitions is None or p in partitions]
    if not tps:
        return {}
    ends = await consumer.end_offsets(tps)
    starts = await consumer.beginning_offsets(tps)
    if since_ms is not None:
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
    if until_ms is not None:
        found = await consumer.offsets_for_times({tp: until_ms for tp in tps})
        ends = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
    return {tp: (starts[tp], ends[tp]) for tp in tps}


async def partition_sizes(
    settings: Settings, topic: str, since_ms: int | None = None, until_ms: int | None = None
) -> dict[int, int]:
    """Records per partition between the two record times (how a backtest splits its work)."""
    consumer = AIOKafkaConsumer(**settings.kafka(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        bounds = await _bounds(consumer, topic, since_ms, until_ms)
    finally:
        await consumer.stop()
    return {tp.partition: max(0, end - start) for tp, (start, end) in bounds.items()}


async def read_records(
    settings: Settings,
    topic: str,
    handle: Handle,
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: Progress | None = None,
    partitions: set[int] | None = None,
) -> int:
    """Feed every record of `topic` from `since_ms` (or the beginning) up to `until_ms` (or the
    end offsets read at the start) to `handle`, in fetched batches; returns how many were read.
    `partitions`: only these (default: all)."""
    consumer = AIOKafkaConsumer(**settings.kafka(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    read = 0
    try:
        bounds = await _bounds(consumer, topic, since_ms, until_ms, partitions)
        tps = list(bounds)
        if not tps:
            return 0
        consumer.assign(tps)
        starts = {tp: b[0] for tp, b in bounds.items()}
        ends = {tp: b[1] for tp, b in bounds.items()}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        todo = {tp for tp in tps if ends[tp] > starts[tp]}
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                mine = [r for r in records if r.offset < ends[tp]]
                if mine:
                    result = handle(mine)
                    if inspect.isawaitable(result):
                        await result
                    read += len(mine)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            if progress:
                progress(read, total)
    finally:
        await consumer.stop()
    return read
