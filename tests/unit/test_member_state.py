"""Folding events into a member record: visits, zones and dwell, purchases, points and tiers."""

from __future__ import annotations

from core.now import Now
from state.loyalty import Loyalty, TierStep
from state.member_state import (
    RECENT_EVENTS,
    StateContext,
    apply_event,
    member_scope,
    remember_event,
    replayed_actions,
)
from state.presence import next_due
from state.stores import Store, Zone

MIN = 60_000
DAY = 86_400_000
T0 = 1_764_000_000_000 + 10 * 3_600_000  # 10:00 in Shanghai

STORE = Store(
    id="s1",
    name="One",
    visit_timeout="30m",
    zone_timeout="15m",
    dwell_thresholds=["5m", "10m"],
    zones=[Zone(id="cos", name="Cosmetics", category="cosmetics"), Zone(id="food", name="Food")],
    wifi_aps={"ap-cos": "cos", "ap-food": "food"},
    beacons={"b-cos": "cos"},
)
LOYALTY = Loyalty(
    points_per_unit=1,
    tier_multipliers={"gold": 2.0},
    tiers=[TierStep(name="pink", min_growth=0), TierStep(name="gold", min_growth=1000)],
    member_days=[26],
)
CTX = StateContext({"s1": STORE, "s2": Store(id="s2", name="Two")}, LOYALTY)


def run(events, record=None):
    derived = []
    for e in events:
        record, more, _ = apply_event(
            record, {"member_id": "m1", "event_id": str(e["ts"]), **e}, CTX
        )
        derived += more
    return record, derived


def types(derived):
    return [d["type"] for d in derived]


def checkin(ts, store="s1"):
    return {"type": "checkin", "ts": ts, "store_id": store}


def beacon(ts, kind="enter", rssi=-60, beacon_id="b-cos"):
    return {
        "type": "beacon",
        "ts": ts,
        "store_id": "s1",
        "kind": kind,
        "rssi": rssi,
        "beacon_id": beacon_id,
        "proximity": "far",
    }


def wifi(ts, ap="ap-food", rssi=-60):
    return {"type": "wifi", "ts": ts, "store_id": "s1", "kind": "probe", "ap_id": ap, "rssi": rssi}


def test_a_visit_starts_once_and_ends_after_the_store_timeout():
    r, d = run([checkin(T0), checkin(T0 + 10 * MIN)])
    assert types(d) == ["visit_started"] and r["visits"] == 1 and r["checkins_today"] == 2
    assert next_due(r, CTX.stores) == T0 + 40 * MIN
    r, d = run([{"type": "timer", "ts": T0 + 40 * MIN}], r)
    assert types(d) == ["visit_ended"]
    assert d[0]["duration_ms"] == 10 * MIN and d[0]["ts"] == T0 + 40 * MIN
    assert r["presence"] is None and next_due(r, CTX.stores) is None


def test_seen_in_another_store_ends_the_visit_and_starts_another():
    r, d = run([checkin(T0), checkin(T0 + 5 * MIN, "s2")])
    assert types(d) == ["visit_started", "visit_ended", "visit_started"]
    assert r["visits"] == 2 and r["visits_by_store"] == {"s1": 1, "s2": 1}


def test_next_visit_after_a_gap_knows_days_since_the_previous_one():
    _, d = run([checkin(T0), checkin(T0 + 31 * DAY)])
    assert types(d) == ["visit_started", "visit_ended", "visit_started"]
    assert d[-1]["days_since_prev_visit"] == 31 and d[-1]["visit_number"] == 2
    assert d[1]["ts"] == T0 + 30 * MIN  # the first visit ended at its timeout, not a month later


def test_zone_dwell_thresholds_fire_on_time_without_new_events():
    r, d = run([beacon(T0)])
    assert types(d) == ["visit_started", "zone_entered"]
    assert next_due(r, CTX.stores) == T0 + 5 * MIN
    r, d = run([{"type": "timer", "ts": T0 + 11 * MIN}], r)
    assert [(x["type"], x["dwell_min"], x["ts"]) for x in d] == [
        ("zone_dwell", 5, T0 + 5 * MIN),
        ("zone_dwell", 10, T0 + 10 * MIN),
    ]
    r, d = run([{"type": "timer", "ts": T0 + 12 * MIN}], r)
    assert d == []  # each threshold fires once


def test_a_zone_with_no_signal_for_the_zone_timeout_is_left_then():
    r, _ = run([beacon(T0), beacon(T0 + 3 * MIN, kind="ranging")])
    r, d = run([{"type": "timer", "ts": T0 + 19 * MIN}], r)
    assert [(x["type"], x["ts"]) for x in d] == [
        ("zone_dwell", T0 + 5 * MIN),
        ("zone_dwell", T0 + 10 * MIN),
        ("zone_left", T0 + 18 * MIN),
    ]
    assert r["presence"]["zone_ms"] == {"cos": 18 * MIN} and r["presence"]["zone"] is None


def test_rssi_hysteresis_keeps_a_shopper_between_zones_where_they_were():
    r, d = run([wifi(T0, "ap-food", -60)])
    assert types(d) == ["visit_started", "zone_entered"] and d[1]["zone_id"] == "food"
    r, d = run([wifi(T0 + MIN, "ap-cos", -80)], r)  # between exit (-85) and enter (-75)
    assert d == [] and r["presence"]["zone"] == "food"
    r, d = run([wifi(T0 + 2 * MIN, "ap-cos", -70)], r)
    assert types(d) == ["zone_left", "zone_entered"] and d[0]["dwell_ms"] == 2 * MIN
    r, d = run([beacon(T0 + 3 * MIN, kind="exit")], r)
    assert types(d) == ["zone_left"] and r["presence"]["zone_ms"] == {"food": 2 * MIN, "cos": MIN}


def test_weak_wifi_is_a_passer_by_not_a_visit():
    r, d = run([wifi(T0, rssi=-95)])
    assert d == [] and r["visits"] == 0


def sale(ts, total, receipt, items=None, **extra):
    return {
        "type": "purchase",
        "ts": ts,
        "store_id": "s1",
        "total": total,
        "receipt_id": receipt,
        "items": items or [],
        **extra,
    }


def test_rfm_points_tier_and_refunds():
    items = [{"sku": "a", "category": "cosmetics", "brand": "lancome", "qty": 2, "price": 300}]
    r, d = run(
        [
            sale(T0 - 100 * DAY, 200, "r0"),
            sale(T0 - 40 * DAY, 300, "r1"),
            sale(T0, 600, "r2", items),
        ]
    )
    assert types(d).count("tier_changed") == 1 and r["tier"] == "gold"
    assert r["points"] == 200 + 300 + 600  # the sale that made gold earned at the old rate
    scope = member_scope(r, Now.of(T0, STORE.tz), LOYALTY)
    assert (
        scope["f30"],
        scope["m30"],
        scope["f90"],
        scope["m90"],
        scope["f365"],
        scope["m365"],
    ) == (1, 600, 2, 900, 3, 1100)
    assert scope["recency_days"] == 0 and r["purchases"]["categories"] == ["cosmetics"]
    assert r["purchases"]["basket_items"] == 2 and r["purchases"]["spend_today"] == 600
    r, d, extra = apply_event(
        r,
        {
            "member_id": "m1",
            "event_id": "x",
            "type": "purchase",
            "ts": T0 + MIN,
            "store_id": "s1",
            "total": 50,
            "receipt_id": "r3",
        },
        CTX,
    )
    assert r["points"] == 1100 + 100 and extra["spend_today_before"] == 600  # gold: 2x
    r, d, extra = apply_event(
        r,
        {
            "member_id": "m1",
            "event_id": "y",
            "type": "refund",
            "ts": T0 + 2 * MIN,
            "store_id": "s1",
            "total": 600,
            "receipt_id": "rf",
            "original_receipt_id": "r2",
        },
        CTX,
    )
    scope = member_scope(r, Now.of(T0 + 2 * MIN, STORE.tz), LOYALTY)
    assert scope["m365"] == 550 and scope["f365"] == 3 and r["points"] == 1200 - 600
    assert types(d) == ["tier_changed"] and d[0]["direction"] == "down" and r["tier"] == "pink"


def test_crm_tier_is_a_floor():
    r, _ = run([{"type": "profile", "ts": T0, "tier": "gold", "birthday": "1990-11-03"}])
    r, d = run([sale(T0 + MIN, 10, "r1")], r)
    assert r["tier"] == "gold" and "tier_changed" not in types(d)
    scope = member_scope(r, Now.of(T0, STORE.tz), LOYALTY)
    assert scope["birthday_month"] and scope["member_day"] is False


def test_input_record_is_not_modified():
    r, _ = run([beacon(T0)])
    snapshot = {k: (dict(v) if isinstance(v, dict) else v) for k, v in r.items()}
    run([beacon(T0 + MIN, kind="exit"), {"type": "timer", "ts": T0 + 60 * MIN}], r)
    assert r == snapshot


def test_stream_clock_follows_event_time_while_busy_and_wall_time_when_quiet():
    from state.timers import StreamClock

    c = StreamClock(idle_ms=2000)
    wall = T0 + 6 * 3_600_000
    c.observe(T0, wall)  # a backlog from six hours ago is being replayed
    assert c.now(wall + 500) == T0
    c.observe(T0 + 60_000, wall + 600)
    assert c.now(wall + 1000) == T0 + 60_000
    assert c.now(wall + 3000) == wall + 3000  # quiet for 2 s: real time again
    c.observe(wall + 10 * MIN, wall + 3100)  # a sensor clock running ahead does not lead
    assert c.now(wall + 3200) == wall + 3100


def test_a_replayed_event_is_recognised_and_returns_the_actions_it_produced():
    record, _ = run([{"type": "checkin", "ts": T0, "store_id": "s1"}])
    push = {"action_id": "a1", "channel": "push"}
    assert replayed_actions(record, "e1") is None  # new to this member
    remember_event(record, "e1", [push])
    remember_event(record, "e2", [])
    assert replayed_actions(record, "e1") == [push]  # applied: skip it, send its push again
    assert replayed_actions(record, "e2") == []
    assert replayed_actions(record, "e3") is None
    for i in range(RECENT_EVENTS):
        remember_event(record, f"later-{i}", [])
    assert replayed_actions(record, "e1") is None  # the window is bounded: state stays small
    assert len(record["_recent"]) == RECENT_EVENTS


def test_timer_schedule_pops_at_most_the_limit_and_keeps_the_rest_due():
    from state.timers import Schedule

    s = Schedule()
    for i in range(5):
        s.set(f"m{i}", T0 + i)
    s.set("later", T0 + DAY)
    first = s.pop_due(T0 + 10, limit=3)
    assert first == [("m0", T0, 0), ("m1", T0 + 1, 0), ("m2", T0 + 2, 0)]  # oldest first
    assert s.pop_due(T0 + 10, limit=3) == [("m3", T0 + 3, 0), ("m4", T0 + 4, 0)]
    assert s.pop_due(T0 + 10, limit=3) == []
    assert len(s) == 1  # the member due tomorrow is still scheduled


def test_each_partition_keeps_its_own_timer_clock():
    """A worker replaying a backlog on one partition while another is live: the backlog's
    members come due by its own event time, not by the live partition's."""
    from state.timers import Schedule, StreamClock

    c, s = StreamClock(idle_ms=2000), Schedule()
    wall = T0 + 6 * 3_600_000
    c.observe(wall - 1000, wall, partition=0)  # live
    c.observe(T0 + 60 * MIN, wall, partition=1)  # six hours behind, replaying
    s.set("live", T0 + 90 * MIN, partition=0)
    s.set("replayed", T0 + 90 * MIN, partition=1)  # visit ends 30 min after its last sighting
    due = s.pop_due(lambda p: c.now(wall + 100, p))
    assert due == [("live", T0 + 90 * MIN, 0)]  # the replayed visit is not over by its own clock
    c.observe(T0 + 95 * MIN, wall + 200, partition=1)
    assert s.pop_due(lambda p: c.now(wall + 300, p)) == [("replayed", T0 + 90 * MIN, 1)]


def test_a_trigger_threshold_fires_at_its_time_after_a_late_sighting_passed_the_store_one():
    """The store fires at 5 and 10 minutes; a trigger asks for 8. A sighting at 11 minutes
    (no timer ran meanwhile) must fire 5, 8 and 10, each at its own time, and 8 only once."""
    ctx = StateContext(CTX.stores, LOYALTY, frozenset({8 * MIN}))
    record, derived = None, []
    for e in (beacon(T0), beacon(T0 + 11 * MIN, kind="ranging")):
        record, more, _ = apply_event(
            record, {"member_id": "m1", "event_id": str(e["ts"]), **e}, ctx
        )
        derived += more
    dwell = [(x["dwell_min"], x["ts"]) for x in derived if x["type"] == "zone_dwell"]
    assert dwell == [(5, T0 + 5 * MIN), (8, T0 + 8 * MIN), (10, T0 + 10 * MIN)]
    record, more, _ = apply_event(
        record, {"member_id": "m1", "event_id": "t", "type": "timer", "ts": T0 + 12 * MIN}, ctx
    )
    assert [x for x in more if x["type"] == "zone_dwell"] == []


def profile_event(ts, **fields):
    """A CRM profile as the edge forwards it (validated, then made canonical)."""
    from contracts.inputs import MemberProfile
    from edge.canonical import canonical

    model = MemberProfile.model_validate(
        {"event_id": f"p{ts}", "ts": ts, "member_id": "m1", **fields}
    )
    c = canonical("members", model, "m1", [("member_id", "m1")])
    return {"type": c["type"], "ts": ts, **c["attrs"]}


def test_a_profile_updates_only_what_it_carries_and_keeps_trigger_tags():
    r, _ = run(
        [profile_event(T0, first_name="Li", tags=["vip"], consent={"push": True, "sms": True})]
    )
    r["tags"] = ["coupon_hunter"]  # what a trigger's tag action added
    r, _ = run([profile_event(T0 + MIN, birthday="1990-11-03")], r)
    assert r["first_name"] == "Li" and r["birthday"] == "1990-11-03"
    assert r["consent"] == {"push": True, "sms": True}
    scope = member_scope(r, Now.of(T0, STORE.tz), LOYALTY)
    assert sorted(scope["tags"]) == ["coupon_hunter", "vip"]
    r, _ = run([profile_event(T0 + 2 * MIN, tags=["gold_club"])], r)
    assert r["tags"] == ["coupon_hunter"] and r["crm_tags"] == ["gold_club"]


def test_consent_follows_the_latest_change_by_time_whatever_arrives_last():
    opt_out = {
        "type": "consent",
        "ts": T0 + 5 * MIN,
        "channel": "sms",
        "granted": False,
        "source": "service-desk",
    }
    r, _ = run([profile_event(T0, consent={"push": True, "sms": True}), opt_out])
    assert r["consent"] == {"push": True, "sms": False}
    assert r["consent_at"]["sms"] == [T0 + 5 * MIN, "service-desk"]
    # an older CRM export arrives later and still says sms: true
    r, _ = run([profile_event(T0 + MIN, consent={"push": True, "sms": True})], r)
    assert r["consent"]["sms"] is False
    r, _ = run([profile_event(T0 + 10 * MIN, consent={"sms": True})], r)
    assert r["consent"] == {"push": True, "sms": True}  # a newer grant, push untouched


def test_tier_and_growth_fall_with_the_rolling_window_without_a_purchase():
    """A 1,500 sale makes gold; a check-in 400 days later finds nothing spent in the last 365
    days: growth 0, tier pink, and a tier_changed down that says why."""
    r, d = run([sale(T0, 1500, "r1")])
    assert r["tier"] == "gold" and r["growth"] == 1500
    r, d = run([checkin(T0 + DAY)], r)
    assert "tier_changed" not in types(d)  # still inside the window
    r, d = run([checkin(T0 + 400 * DAY)], r)
    changed = [x for x in d if x["type"] == "tier_changed"]
    assert r["growth"] == 0 and r["tier"] == "pink"
    assert [(c["from_tier"], c["to_tier"], c["direction"], c["reason"]) for c in changed] == [
        ("gold", "pink", "down", "rolling_window")
    ]
    assert member_scope(r, Now.of(T0 + 400 * DAY, STORE.tz), LOYALTY)["m365"] == 0
    r, d = run([checkin(T0 + 400 * DAY + MIN)], r)
    assert "tier_changed" not in types(d)  # once
