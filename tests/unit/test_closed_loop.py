"""The closed loop in the pure step: coupon codes remembered, redeemed once, goals converted per
fire for treated and control members; the report's uplift interval."""

from __future__ import annotations

from typing import Any

import pytest

from state.stores import Store
from tests.story import Story, member
from triggers.engine import TriggerSet
from triggers.loader import parse_triggers
from triggers.report import Report, newcombe, wilson

MIN = 60_000
DAY = 24 * 60 * MIN
T0 = 1_764_036_000_000  # 10:00 in Shanghai
STORES = {"s1": Store(id="s1", name="One", visit_timeout="30m")}
COUPON: dict[str, Any] = {
    "id": "welcome-coupon",
    "name": "coupon on check-in",
    "when": {"event": "checkin"},
    "then": [{"type": "coupon", "pool": "p1", "value": 20, "expiry": "3d"}],
    "guardrails": {"quiet_hours": None, "cooldown": "1m"},
    "goal": {"within": "7d", "min_total": 100},
}


def story(holdout: float = 0.0, member_id: str = "m1") -> Story:
    doc = {**COUPON, "guardrails": {**COUPON["guardrails"], "holdout": holdout}}
    s = Story(TriggerSet.build(parse_triggers([doc], "t")), STORES, record=member(member_id))
    s.ctx = type(s.ctx)(
        s.ctx.stores, s.ctx.loyalty, s.ctx.extra_dwell_ms, lambda pool, aid: f"{pool}-{aid[:6]}"
    )
    return s


def sale(s: Story, ts: int, total: float, coupons: list[str] | None = None):
    return s.event("purchase", ts, receipt_id=f"r{ts}", total=total, coupons=coupons or [])


def test_a_code_the_member_was_sent_is_redeemed_once_and_a_purchase_converts_once():
    s = story()
    (action,) = s.event("checkin", T0).actions
    code = f"p1-{action['action_id'][:6]}"
    assert s.record["coupons"][code][:2] == ["welcome-coupon", action["action_id"]]
    first = sale(s, T0 + DAY, 300.0, [code, "NOT-OURS"])
    outcomes = {(c["kind"], c.get("outcome"), c.get("group")) for c in first.conversions}
    assert outcomes == {
        ("redemption", "attributed", None),
        ("redemption", "unknown_code", None),
        ("conversion", None, "treated"),
    }
    again = sale(s, T0 + DAY + MIN, 300.0, [code])
    assert [(c["kind"], c.get("outcome")) for c in again.conversions] == [
        ("redemption", "already_redeemed")
    ]  # and the same fire does not convert twice


def test_expired_codes_small_baskets_and_late_purchases_are_not_attributed():
    s = story()
    (action,) = s.event("checkin", T0).actions
    code = f"p1-{action['action_id'][:6]}"
    assert sale(s, T0 + DAY, 50.0).conversions == []  # below the goal's min_total
    late = sale(s, T0 + 4 * DAY, 300.0, [code])
    assert [(c["kind"], c.get("outcome")) for c in late.conversions] == [
        ("redemption", "expired"),
        ("conversion", None),
    ]
    s2 = story()
    s2.event("checkin", T0)
    assert sale(s2, T0 + 8 * DAY, 300.0).conversions == []  # outside the 7-day window


def test_held_out_members_convert_as_control():
    members = [f"m{n}" for n in range(40)]
    groups = set()
    for m in members:
        s = story(holdout=0.5, member_id=m)
        s.event("checkin", T0)
        groups |= {c["group"] for c in sale(s, T0 + DAY, 300.0).conversions}
    assert groups == {"treated", "control"}


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (a): 56/70 vs 48/80
    d, lo, hi = newcombe(56, 70, 48, 80)
    assert (round(d, 4), round(lo, 4), round(hi, 4)) == (0.2, 0.0524, 0.3339)
    assert wilson(0, 10)[0] == 0.0


def test_the_report_counts_distinct_members_and_calls_a_clear_uplift_significant():
    r = Report()
    for n in range(200):
        verdict = "fired" if n < 100 else "held_out"
        r.decision({"trigger_id": "t", "member_id": f"m{n}", "verdict": verdict, "ts": T0})
    for n in list(range(40)) + list(range(100, 110)):
        group = "treated" if n < 100 else "control"
        conversion = {"kind": "conversion", "trigger_id": "t", "member_id": f"m{n}"}
        r.conversion({**conversion, "group": group, "ts": T0 + DAY, "amount": 100.0})
    out = r.as_dict("t")["triggers"]["t"]
    assert (out["converted"], out["converted_control"], out["revenue"]) == (40, 10, 4000.0)
    assert out["uplift"]["difference"] == pytest.approx(0.3)
    assert out["uplift"]["significant"] and out["uplift"]["ci95"][0] > 0


def test_a_code_brought_by_someone_else_is_redeemed_on_the_member_it_was_sent_to():
    """The edge names the code's owner (`coupon_owners`); the buyer's step hands the
    redemption over, and the owner's step attributes it once, saying who redeemed it."""
    owner = story(member_id="m-owner")
    (action,) = owner.event("checkin", T0).actions
    code = f"p1-{action['action_id'][:6]}"
    friend = story(member_id="m-friend")
    bought = friend.event(
        "purchase",
        T0 + DAY,
        receipt_id="r1",
        total=120.0,
        coupons=[code],
        coupon_owners={code: "m-owner"},
    )
    assert [c for c in bought.conversions if c["kind"] == "redemption"] == []
    (handover,) = bought.handovers
    assert (handover["member_id"], handover["type"]) == ("m-owner", "coupon_redeemed")
    result = owner.event(handover["type"], handover["ts"], **handover["attrs"])
    (redemption,) = result.conversions
    assert (redemption["outcome"], redemption["trigger_id"], redemption["redeemed_by"]) == (
        "attributed",
        "welcome-coupon",
        "m-friend",
    )
    assert redemption["event_id"] == friend.last[0]["event_id"]  # the sale it came from
    again = owner.event(handover["type"], handover["ts"] + MIN, **handover["attrs"])
    assert [c["outcome"] for c in again.conversions] == ["already_redeemed"]
