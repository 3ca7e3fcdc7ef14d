"""The step alone: CPU µs per event of fold + triggers + actions, with the member record's orjson
round trip the table store adds, on the benchmark's own event mix and triggers, no Kafka.

What the worker spends beyond this is faust's and the I/O's; `bench/run.py` prints it next to
the end-to-end figures of the same run. Run alone: `python bench/step_cost.py [--profile]`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bulk_load import member_id, registration_events  # noqa: E402
from contracts.inputs import IDENTIFIER_FIELDS  # noqa: E402
from core.settings import Settings  # noqa: E402
from edge.canonical import canonical  # noqa: E402
from edge.validation import Accepted, validate  # noqa: E402
from state.identity import identifiers_of  # noqa: E402
from state.loyalty import load_loyalty  # noqa: E402
from state.member_state import StateContext  # noqa: E402
from state.stores import load_stores  # noqa: E402
from triggers.engine import TriggerSet  # noqa: E402
from triggers.loader import parse_triggers  # noqa: E402
from triggers.pipeline import step  # noqa: E402


def scope(topic: str, value: bytes, ts: int, settings: Settings, member: str) -> dict[str, Any]:
    """The event as the member agent sees it (validation, canonical, event_scope)."""
    result = validate(topic, value, ts, settings.max_message_bytes)
    assert isinstance(result, Accepted), result
    fields = {f: getattr(result.event, f, None) for f in IDENTIFIER_FIELDS}
    canon = canonical(topic, result.event, member, identifiers_of(fields, "x"))
    return {**canon["attrs"], **{k: canon.get(k) for k in _FIELDS}}


_FIELDS = ("event_id", "member_id", "type", "ts", "store_id")


def measure(triggers: int = 200, members: int = 5000, events: int = 20000, profile: bool = False):
    from bench.run import Load, trigger_docs

    settings = Settings.from_env({})
    tset = TriggerSet.build(parse_triggers(trigger_docs(triggers), "bench"))
    ctx = StateContext(
        load_stores(settings.stores_path),
        load_loyalty(settings.loyalty_path),
        tset.dwell_thresholds_ms(),
    )
    now = int(time.time() * 1000)
    table: dict[str, bytes] = {}
    for i in range(members):
        record = None
        for ev in registration_events(settings, i, now, member_id(i)):
            record = step(record, ev, TriggerSet(), ctx, now).record
        table[member_id(i)] = orjson.dumps(record)
    load = Load("", "", members, resolution=False)
    mix = []
    for _ in range(events):
        topic, _key, value = load.event(now)
        body = orjson.loads(value)
        mix.append(scope(topic, value, now, settings, body.get("member_id") or "guest"))
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    for ev in mix:
        stored = table.get(ev["member_id"])
        before = orjson.loads(stored) if stored is not None else None
        result = step(before, ev, tset, ctx, now)
        table[ev["member_id"]] = orjson.dumps(result.record)
    if profiler:
        profiler.disable()
    cpu = time.process_time() - started
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return {
        "triggers": triggers,
        "events": events,
        "step_us_per_event": round(cpu / events * 1e6, 1),
    }


def measure_backtest(triggers: int, members: int = 5000, events: int = 50000) -> dict[str, Any]:
    """A backtest's fold alone (triggers/backtest.py, no Kafka): CPU events/s on the benchmark's
    mix, from fresh member records as a backtest starts."""
    from bench.run import Load, trigger_docs
    from triggers.backtest import Backtest

    settings = Settings.from_env({})
    tset = TriggerSet.build(parse_triggers(trigger_docs(triggers), "bench"))
    ctx = StateContext(
        load_stores(settings.stores_path),
        load_loyalty(settings.loyalty_path),
        tset.dwell_thresholds_ms(),
    )
    now = int(time.time() * 1000)
    load = Load("", "", members, resolution=False)
    mix = []
    for _ in range(events):
        topic, _key, value = load.event(now)
        body = orjson.loads(value)
        ev = scope(topic, value, now, settings, body.get("member_id") or "guest")
        mix.append({**{k: ev[k] for k in _FIELDS}, "attrs": ev})
    run = Backtest(tset, ctx)
    started = time.process_time()
    for ev in mix:
        run.feed(ev, now)
    cpu = time.process_time() - started
    return {
        "triggers": triggers,
        "events": events,
        "backtest_events_per_cpu_s": round(events / cpu),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--triggers", type=int, default=200)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--backtest", action="store_true", help="a backtest's fold instead")
    args = parser.parse_args()
    if args.backtest:
        print(measure_backtest(1, events=args.events))
        print(measure_backtest(args.triggers, events=args.events))
    else:
        print(measure(args.triggers, events=args.events, profile=args.profile))
