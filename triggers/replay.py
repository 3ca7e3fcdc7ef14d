"""Run a backtest (triggers/backtest.py) over `member-events` as Kafka holds it: its own consumer
(no group, nothing committed, nothing produced), the live definitions from the `triggers` topic
beside or instead of the drafts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.settings import Settings, parse_caps
from state.coupons import load_pools
from state.loyalty import load_loyalty
from state.member_state import StateContext
from state.stores import load_stores
from triggers.backtest import Backtest
from triggers.engine import TriggerSet
from triggers.model import TriggerDef
from triggers.registry import published

Progress = Callable[[int, int], None]  # (records read, records in the window)


async def live_definitions(settings: Settings, refs: Any = None) -> list[TriggerDef]:
    """The definitions the workers evaluate now (status live)."""
    current = await published(settings.kafka(), settings.topic_prefix + "triggers")
    out = []
    for record in current.values():
        if record is not None and record["status"] == "live":
            try:
                out.append(TriggerDef.model_validate(record["definition"], context=refs))
            except ValueError:
                continue  # the workers refuse it too
    return out


async def backtest(
    settings: Settings,
    drafts: Sequence[TriggerDef],
    mode: Literal["beside", "instead"] = "beside",
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The report of `drafts` (beside the live triggers, or instead of them) over the recorded
    member events between `since_ms` and `until_ms` (record time; default: all retained)."""
    started = time.monotonic()
    definitions = {d.id: d for d in (await live_definitions(settings) if mode == "beside" else [])}
    definitions.update({d.id: d for d in drafts})  # a draft replaces its live version
    triggers = TriggerSet.build(list(definitions.values()), parse_caps(settings.frequency_caps))
    ctx = StateContext(
        load_stores(settings.stores_path),
        load_loyalty(settings.loyalty_path),
        triggers.dwell_thresholds_ms(),
    )
    budgets = {name: pool.budget for name, pool in load_pools(settings.coupons_path).items()}
    run = Backtest(triggers, ctx, budgets)
    topic = settings.topic_prefix + "member-events"
    records = await _read(settings, topic, since_ms, until_ms, run, progress)
    report = run.report({d.id for d in drafts} if drafts else None)
    seconds = time.monotonic() - started
    report["run"] = {
        "mode": mode,
        "triggers": len(triggers),
        "records": records,
        "seconds": round(seconds, 2),
        "events_per_s": round(run.events / seconds) if seconds > 0 else None,
    }
    return report


async def _read(
    settings: Settings,
    topic: str,
    since_ms: int | None,
    until_ms: int | None,
    run: Backtest,
    progress: Progress | None,
) -> int:
    consumer = AIOKafkaConsumer(**settings.kafka(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    read = 0
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return 0
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        if since_ms is not None:
            found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
            starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        if until_ms is not None:
            found = await consumer.offsets_for_times({tp: until_ms for tp in tps})
            ends = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        todo = {tp for tp in tps if ends[tp] > starts[tp]}
        while todo:
            batches = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
            for tp, recs in batches.items():
                for r in recs:
                    if r.offset >= ends[tp]:
                        todo.discard(tp)
                        break
                    read += 1
                    try:
                        doc = orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        continue  # dead-lettered by the live worker too
                    items = (
                        doc.get("events") if isinstance(doc, dict) and "events" in doc else [doc]
                    )
                    for event in items if isinstance(items, list) else []:
                        if isinstance(event, dict) and isinstance(event.get("member_id"), str):
                            run.feed(event, r.timestamp)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            if progress:
                progress(read, total)
    finally:
        await consumer.stop()
    return read
