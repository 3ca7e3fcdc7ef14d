"""The private state of faust's App and Consumer and of aiokafka's fetcher that StorePulse reads,
in one place (faust_ext.WRITTEN_FOR names the versions): what may act, committed offsets, and the
diagnostics the stall watch logs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.types import TP


def _aiokafka_state(app: faust.App, tp: TP) -> Any | None:
    """aiokafka's TopicPartitionState for tp, or None (private API, read only)."""
    try:
        consumer = app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]
        assignment = consumer._fetcher._subscriptions.subscription.assignment
        if assignment is None:
            return None
        return assignment.state_value(TopicPartition(tp.topic, tp.partition))
    except Exception:
        return None


def app_ready(app: faust.App) -> bool:
    """The one "may this worker act on its partitions" check: not rebalancing, tables
    recovered, a consumer (the timers, the stall watch and /health all ask it)."""
    tables: Any = app.tables  # `recovery` is on faust's TableManager, not its interface
    return app.consumer is not None and not app.rebalancing and tables.recovery.completed.is_set()


def committed_offset(app: faust.App, tp: TP) -> int | None:
    """faust's committed offset of `tp` (a private map of its Consumer)."""
    consumer: Any = app.consumer
    return consumer._committed_offset.get(tp)


def consumer_waits(app: faust.App) -> dict[str, Any]:
    """What the consumer as a whole waits on: faust's flow and drain task, aiokafka's fetcher
    (in-flight fetches, partitions with records not yet taken). Logged once per stall."""
    out: dict[str, Any] = {}
    try:
        consumer: Any = app.consumer
        out["faust_flow_active"] = consumer.flow_active
        out["faust_suspend_flow"] = consumer.suspend_flow.is_set()
        aio = consumer._thread._ensure_consumer()
        fetcher = aio._fetcher
        out["fetch_in_flight_nodes"] = sorted(fetcher._in_flight)
        out["fetch_pending_tasks"] = len(fetcher._pending_tasks)
        out["fetch_buffered"] = sorted(f"{tp.topic}[{tp.partition}]" for tp in fetcher._records)
        out["fetch_waiters"] = len(fetcher._fetch_waiters)
        chains = [_await_chain(t.get_coro()) for t in asyncio.all_tasks()]
        marks = ("_drain_messages", "on_message", "put", "wait_until_ebb", "acquire")
        out["drain"] = [c for c in chains if any(m in c for m in marks)][:20]
    except Exception as exc:  # diagnostics must never break the watch
        out["error"] = repr(exc)
    return out


def _await_chain(coro: Any) -> str:
    """Where a task is suspended: each coroutine it awaits, outermost first."""
    parts: list[str] = []
    while coro is not None and len(parts) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            parts.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return " -> ".join(parts)


def describe(app: faust.App, tp: TP) -> dict[str, Any]:
    """Everything faust and aiokafka know about one partition: for the log and `/health`."""
    consumer: Any = app.consumer
    state = _aiokafka_state(app, tp)
    out: dict[str, Any] = {
        "topic": tp.topic,
        "partition": tp.partition,
        "faust_active": tp in (consumer._active_partitions or ()),
        "faust_paused": tp in consumer._paused_partitions,
        "faust_buffered": tp in consumer._buffered_partitions,
        "faust_committed": committed_offset(app, tp),
        "faust_read": consumer._read_offset.get(tp),
    }
    if state is not None:
        last_fetch = state.timestamp / 1000 if state.timestamp else None
        out.update(
            aiokafka_paused=state.paused,
            aiokafka_position=state._position,
            aiokafka_awaiting_reset=state.awaiting_reset,
            highwater=state.highwater,
            last_fetch_s_ago=round(time.time() - last_fetch, 1) if last_fetch else None,
        )
    return out


def fetch_position(app: faust.App, tp: TP) -> int | None:
    """aiokafka's next offset to fetch for `tp` (None when it has no state for it)."""
    state = _aiokafka_state(app, tp)
    return state._position if state is not None else None
