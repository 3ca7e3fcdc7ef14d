"""Run a backtest (triggers/backtest.py) over `member-events` as Kafka holds it: its own consumer
(no group, nothing committed, nothing produced), the live definitions from the `triggers` topic
beside or instead of the drafts."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Literal

import orjson

from contracts.batches import unpack
from core.settings import Settings, parse_caps
from state.coupons import load_pools
from state.loyalty import load_loyalty
from state.member_state import StateContext
from state.stores import load_stores
from state.topic_reads import Progress, partition_sizes, read_records
from triggers.backtest import Backtest, Summary
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


def _setup(settings: Settings, definitions: Sequence[TriggerDef]) -> Backtest:
    triggers = TriggerSet.build(list(definitions), parse_caps(settings.frequency_caps))
    ctx = StateContext(
        load_stores(settings.stores_path),
        load_loyalty(settings.loyalty_path),
        triggers.dwell_thresholds_ms(),
    )
    budgets = {name: pool.budget for name, pool in load_pools(settings.coupons_path).items()}
    return Backtest(triggers, ctx, budgets)


async def backtest(
    settings: Settings,
    drafts: Sequence[TriggerDef],
    mode: Literal["beside", "instead"] = "beside",
    since_ms: int | None = None,
    until_ms: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The report of `drafts` (beside the live triggers, or instead of them) over the recorded
    member events between `since_ms` and `until_ms` (record time; default: all retained).

    A member's events are all on one partition of `member-events` (a merge arrives there as the
    visitor's history), so partitions fold apart: a large window is split over up to
    STOREPULSE_BACKTEST_PROCESSES processes (at most the machine's cores), niced so that a
    worker on the same host keeps its CPU, and their reports are added up."""
    started = time.monotonic()
    definitions = {d.id: d for d in (await live_definitions(settings) if mode == "beside" else [])}
    definitions.update({d.id: d for d in drafts})  # a draft replaces its live version
    chosen = list(definitions.values())
    topic = settings.topic_prefix + "member-events"
    sizes = await partition_sizes(settings, topic, since_ms, until_ms)
    groups = split_partitions(sizes, _processes(settings, sizes))
    run = _setup(settings, chosen)
    if len(groups) <= 1:
        records = await _read(settings, topic, since_ms, until_ms, run, progress)
    else:
        records = await _in_processes(settings, chosen, groups, since_ms, until_ms, run, progress)
    report = run.report({d.id for d in drafts} if drafts else None)
    seconds = time.monotonic() - started
    report["run"] = {
        "mode": mode,
        "triggers": len(run.triggers),
        "records": records,
        "processes": max(1, len(groups)),
        "seconds": round(seconds, 2),
        "events_per_s": round(run.events / seconds) if seconds > 0 else None,
    }
    return report


def _processes(settings: Settings, sizes: dict[int, int]) -> int:
    if sum(sizes.values()) < settings.backtest_parallel_from:
        return 1
    busy = sum(1 for n in sizes.values() if n)
    return max(1, min(settings.backtest_processes, os.cpu_count() or 1, busy))


def split_partitions(sizes: dict[int, int], groups: int) -> list[set[int]]:
    """Partitions with records in `groups` sets of about equal records (largest first, each to
    the lightest set so far)."""
    loads, sets = [0] * max(1, groups), [set[int]() for _ in range(max(1, groups))]
    for part, n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        if n:
            lightest = loads.index(min(loads))
            sets[lightest].add(part)
            loads[lightest] += n
    return [g for g in sets if g]


_COUNTS: Any = None  # the child's view of the shared (read, total) counters


def _child_start(counts: Any) -> None:
    global _COUNTS
    _COUNTS = counts
    os.nice(10)  # a backtest yields to the live pipeline on the same host


def _fold_partitions(
    settings: Settings,
    definitions: list[TriggerDef],
    slot: int,
    partitions: set[int],
    since_ms: int | None,
    until_ms: int | None,
) -> tuple[Summary, int]:
    """In a child process: one set of partitions folded, its counts returned."""
    run = _setup(settings, definitions)

    def progress(done: int, total: int) -> None:
        _COUNTS[2 * slot], _COUNTS[2 * slot + 1] = done, total

    topic = settings.topic_prefix + "member-events"
    records = asyncio.run(_read(settings, topic, since_ms, until_ms, run, progress, partitions))
    return run.summary(), records


async def _in_processes(
    settings: Settings,
    definitions: list[TriggerDef],
    groups: list[set[int]],
    since_ms: int | None,
    until_ms: int | None,
    run: Backtest,
    progress: Progress | None,
) -> int:
    spawn = multiprocessing.get_context("spawn")  # no forked copy of a running event loop
    counts = spawn.Array("q", 2 * len(groups), lock=False)
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(
        len(groups), mp_context=spawn, initializer=_child_start, initargs=(counts,)
    ) as pool:
        futures = [
            loop.run_in_executor(
                pool, _fold_partitions, settings, definitions, i, group, since_ms, until_ms
            )
            for i, group in enumerate(groups)
        ]
        pending: set[asyncio.Future[Any]] = set(futures)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.5)
            if progress:
                progress(sum(counts[0::2]), sum(counts[1::2]))
        records = 0
        for future in futures:
            summary, read = future.result()
            run.absorb(summary)
            records += read
    return records


async def _read(
    settings: Settings,
    topic: str,
    since_ms: int | None,
    until_ms: int | None,
    run: Backtest,
    progress: Progress | None,
    partitions: set[int] | None = None,
) -> int:
    def feed(items: list[Any], timestamp: int) -> None:
        for event in items:
            if isinstance(event, dict) and isinstance(event.get("member_id"), str):
                run.feed(event, timestamp)

    return await read_items(settings, topic, since_ms, until_ms, feed, progress, partitions)


async def read_items(
    settings: Settings,
    topic: str,
    since_ms: int | None,
    until_ms: int | None,
    handle: Callable[[list[Any], int], None],
    progress: Progress | None = None,
    partitions: set[int] | None = None,
) -> int:
    """Every record of `topic` between the two record times (default: all retained), each
    envelope's items handed to `handle` with the record's timestamp; returns records read."""

    def records(batch: list[Any]) -> None:
        for r in batch:
            try:
                handle(unpack(r.value), r.timestamp)
            except orjson.JSONDecodeError:
                continue  # dead-lettered by the live worker too

    return await read_records(settings, topic, records, since_ms, until_ms, progress, partitions)


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
