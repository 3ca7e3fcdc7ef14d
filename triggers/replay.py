"""Run a backtest (triggers/backtest.py) over `member-events` as Kafka holds it: its own consumer
(no group, nothing committed, nothing produced), the live definitions from the `triggers` topic
beside or instead of the drafts."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import orjson

from contracts.batches import unpack
from core.settings import Settings, parse_caps
from state.coupons import load_pools
from state.loyalty import load_loyalty
from state.member_state import StateContext
from state.stores import load_stores
from state.topic_reads import Progress, read_records
from triggers.backtest import Backtest
from triggers.engine import TriggerSet
from triggers.model import TriggerDef
from triggers.registry import published
from triggers.report import Report


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
    def feed(items: list[Any], timestamp: int) -> None:
        for event in items:
            if isinstance(event, dict) and isinstance(event.get("member_id"), str):
                run.feed(event, timestamp)

    return await read_items(settings, topic, since_ms, until_ms, feed, progress)


async def read_items(
    settings: Settings,
    topic: str,
    since_ms: int | None,
    until_ms: int | None,
    handle: Callable[[list[Any], int], None],
    progress: Progress | None = None,
) -> int:
    """Every record of `topic` between the two record times (default: all retained), each
    envelope's items handed to `handle` with the record's timestamp; returns records read."""

    def records(batch: list[Any]) -> None:
        for r in batch:
            try:
                handle(unpack(r.value), r.timestamp)
            except orjson.JSONDecodeError:
                continue  # dead-lettered by the live worker too

    return await read_records(settings, topic, records, since_ms, until_ms, progress)


async def trigger_report(
    settings: Settings,
    trigger: str | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> dict[str, Any]:
    """The report (triggers/report.py) from `decisions`, `deliveries` and `conversions`."""
    report = Report(since_ms, until_ms)
    prefix = settings.topic_prefix
    # a window's decisions may convert up to a goal's length later: read to now
    read_since = since_ms

    def wanted(item: Any) -> bool:
        return isinstance(item, dict) and (trigger is None or item.get("trigger_id") == trigger)

    def decisions(items: list[Any], _: int) -> None:
        for d in items:
            if wanted(d) and d.get("verdict") in ("fired", "held_out"):
                report.decision(d, d.get("store_id"))

    def deliveries(items: list[Any], _: int) -> None:
        for d in items:
            if wanted(d) and isinstance(d.get("outcome"), str):
                report.delivery(d)

    def conversions(items: list[Any], _: int) -> None:
        for c in items:
            if isinstance(c, dict) and c.get("kind") in ("redemption", "conversion"):
                if c["kind"] == "redemption" and c.get("outcome") != "attributed":
                    report.conversion(c)  # not attributed: counted for every report
                elif wanted(c):
                    report.conversion(c)

    await read_items(settings, prefix + "decisions", read_since, None, decisions)
    await read_items(settings, prefix + "deliveries", read_since, None, deliveries)
    await read_items(settings, prefix + "conversions", read_since, None, conversions)
    return report.as_dict(trigger)
