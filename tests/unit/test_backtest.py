"""A backtest split over partitions adds up to the same report as one run over them all."""

from __future__ import annotations

import time

import orjson

from bench.run import Load, trigger_docs
from bench.step_cost import _FIELDS, scope
from core.settings import Settings
from state.loyalty import load_loyalty
from state.member_state import StateContext
from state.stores import load_stores
from state.timers import partition_of
from triggers.backtest import Backtest
from triggers.engine import TriggerSet
from triggers.loader import parse_triggers
from triggers.replay import split_partitions


def test_partitions_are_split_into_sets_of_about_equal_records():
    sizes = {0: 100, 1: 90, 2: 10, 3: 0, 4: 5}
    assert split_partitions(sizes, 2) == [{0, 4}, {1, 2}]  # 105 and 100 records
    assert split_partitions(sizes, 8) == [{0}, {1}, {2}, {4}]  # no set for an empty partition
    assert split_partitions(sizes, 1) == [{0, 1, 2, 4}]


def test_a_backtest_folded_by_partition_and_added_up_equals_one_run():
    settings = Settings.from_env({})
    staff = {"type": "message", "channel": "log", "template": "{member.member_id} is here"}
    docs = [
        *trigger_docs(20),
        {  # fires, holds out and is suppressed by its cooldown
            "id": "greet",
            "name": "greet",
            "when": {"event": "checkin"},
            "then": [staff],
            "guardrails": {"quiet_hours": None, "cooldown": "1h", "holdout": 0.2},
        },
    ]
    now = int(time.time() * 1000)
    load = Load("", "", 300, resolution=False)
    mix = []
    for n in range(3000):
        topic, _key, value = load.event(now + n * 1000)
        body = orjson.loads(value)
        ev = scope(topic, value, now + n * 1000, settings, body.get("member_id") or "guest")
        mix.append({**{k: ev[k] for k in _FIELDS}, "attrs": ev})

    def run() -> Backtest:
        triggers = TriggerSet.build(parse_triggers(docs, "test"))
        ctx = StateContext(
            load_stores(settings.stores_path),
            load_loyalty(settings.loyalty_path),
            triggers.dwell_thresholds_ms(),
        )
        return Backtest(triggers, ctx, {"welcome-back-20": 5})

    whole = run()
    parts = [run() for _ in range(3)]
    for ev in mix:
        whole.feed(ev, ev["ts"])
        parts[partition_of(ev["member_id"], 3)].feed(ev, ev["ts"])
    added = run()
    for p in parts:
        added.absorb(p.summary())
    report = whole.report()
    greet = report["triggers"]["greet"]
    assert greet["fires"] > 50 and greet["held_out"] > 5 and greet["suppressed"]["cooldown"] > 5
    assert added.report() == report
