"""Identifier normalisation, keyed hashing, random MACs, redaction and anonymous merges."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from edge.validation import redact
from state.identity import (
    RANDOM_MAC,
    anonymous_id,
    identifiers_of,
    is_randomized_mac,
    keyed_hash,
    normalize_mac,
)
from state.loyalty import Loyalty, TierStep
from state.member_state import StateContext, apply_event, merge_anonymous, new_member
from state.stores import Store
from triggers.engine import TriggerSet
from triggers.loader import parse_triggers
from triggers.pipeline import merge

SECRET = "unit-test-secret-0123456789"
LOYALTY = Loyalty(
    tier_multipliers={"gold": 2.0},
    tiers=[TierStep(name="pink", min_growth=0), TierStep(name="gold", min_growth=1000)],
)
CTX = StateContext({"s1": Store(id="s1", name="One", visit_timeout="30m")}, LOYALTY)
T0 = 1_764_000_000_000 + 10 * 3_600_000
MIN, DAY = 60_000, 86_400_000


def test_same_phone_in_any_format_hashes_the_same_and_never_appears():
    forms = ["13912345678", "+86 139-1234-5678", "86 13912345678", "139 1234 5678"]
    hashes = {identifiers_of({"phone": f}, SECRET)[0][1] for f in forms}
    assert len(hashes) == 1
    (value,) = hashes
    assert "13912345678" not in value and value != keyed_hash(
        "other-secret-0123456", "phone", "13912345678"
    )


def test_mac_forms_normalise_and_random_macs_are_flagged():
    assert normalize_mac("AA-BB-CC-DD-EE-FF") == normalize_mac("aa:bb:cc:dd:ee:ff")
    assert not is_randomized_mac(normalize_mac("a8:bb:cc:dd:ee:ff"))
    assert is_randomized_mac(normalize_mac("da:a1:19:00:00:01"))
    kinds = [k for k, _ in identifiers_of({"mac": "da:a1:19:00:00:01"}, SECRET)]
    assert kinds == [RANDOM_MAC]


def test_identifiers_come_in_trust_order():
    fields = {"app_device_id": "d", "member_card": "c", "openid": "o", "member_id": None}
    assert [k for k, _ in identifiers_of(fields, SECRET)] == [
        "member_card",
        "openid",
        "app_device_id",
    ]


def test_anonymous_id_is_stable_per_device():
    assert anonymous_id("app_device_id", "d1") == anonymous_id("app_device_id", "d1")
    assert anonymous_id("app_device_id", "d1") != anonymous_id("openid", "d1")


def test_redaction_replaces_phones_and_macs_and_keeps_the_rest():
    raw = orjson.dumps(
        {
            "event_id": "e1",
            "ts": 1795703577393,
            "mac": "aa:bb:cc:dd:ee:ff",
            "nested": [{"phone": "13912345678"}],
        }
    )
    safe, changed = redact(raw, SECRET)
    data = orjson.loads(safe)
    assert changed and data["event_id"] == "e1" and data["ts"] == 1795703577393
    assert b"aa:bb" not in safe and b"13912345678" not in safe
    text, changed = redact(b"garbage aa:bb:cc:dd:ee:ff tel 13912345678 ts 1795703577393", SECRET)
    assert changed and b"aa:bb" not in text and b"13912345678" not in text
    assert b"1795703577393" in text
    assert redact(b'{"ts": 1795703577393}', SECRET) == (b'{"ts": 1795703577393}', False)


@given(st.binary(max_size=200))
def test_redaction_never_raises(raw):
    safe, _ = redact(raw, SECRET)
    assert isinstance(safe, bytes)


def anon_record(visits: int, store: str, last: int, day: str) -> dict:
    r = dict(new_member("anon-x"))
    r.update(
        visits=visits,
        visits_by_store={store: visits},
        first_visit_ts=last - 1000,
        last_visit_ts=last,
        checkin_day=day,
        checkins_today=1,
        presence={
            "store": store,
            "visit_start": last,
            "last_seen": last,
            "zone": None,
            "zone_since": None,
            "zone_seen": 0,
            "dwell_done": 0,
            "zone_ms": {},
        },
    )
    return r


def test_merge_adds_history_once_and_is_deterministic():
    member = new_member("m1")
    member.update(
        visits=1,
        visits_by_store={"s1": 1},
        first_visit_ts=5000,
        last_visit_ts=5000,
        checkin_day="2026-11-26",
        checkins_today=1,
    )
    anon = anon_record(2, "s2", 9000, "2026-11-26")
    a, b = dict(member), dict(member)
    assert merge_anonymous(a, "anon-x", anon, CTX) and merge_anonymous(b, "anon-x", anon, CTX)
    assert a == b
    assert a["visits"] == 3 and a["visits_by_store"] == {"s1": 1, "s2": 2}
    assert a["first_visit_ts"] == 5000 and a["last_visit_ts"] == 9000
    assert a["presence"]["store"] == "s2"  # the visitor is in a store right now
    assert a["checkins_today"] == 2 and a["prev_visit_ts"] == 5000
    assert not merge_anonymous(a, "anon-x", anon, CTX)  # a replay changes nothing
    assert a["visits"] == 3


def fold(member_id, *events):
    record = None
    for n, e in enumerate(events):
        record, _, _ = apply_event(
            record, {"member_id": member_id, "event_id": f"{member_id}{n}", **e}, CTX
        )
    return record


def sale(ts, total, receipt):
    return {"type": "purchase", "ts": ts, "store_id": "s1", "total": total, "receipt_id": receipt}


def test_a_merge_carries_purchases_points_growth_and_tier_once():
    """An anonymous 500 CNY sale's 500 points follow the shopper once they are identified, and
    so do its spend (RFM, growth) and the tier that spend earns; a replayed merge adds nothing."""
    member = fold("m1", sale(T0 - 40 * DAY, 600, "r1"))
    anon = fold("anon-x", sale(T0, 500, "r2"))
    assert (member["points"], anon["points"], member["tier"]) == (600, 500, "pink")
    assert merge_anonymous(member, "anon-x", anon, CTX)
    assert member["points"] == 1100 and member["growth"] == 1100 and member["tier"] == "gold"
    p = member["purchases"]
    assert sorted(p["receipts"]) == ["s1/r1", "s1/r2"] and p["last_ts"] == T0
    assert sum(n for n, _ in p["days"].values()) == 2
    assert not merge_anonymous(member, "anon-x", anon, CTX)
    assert member["points"] == 1100
    refund = {
        "type": "refund",
        "ts": T0 + MIN,
        "store_id": "s1",
        "total": 500,
        "receipt_id": "rf",
        "original_receipt_id": "r2",
    }
    member, _, _ = apply_event(member, {"member_id": "m1", "event_id": "rf", **refund}, CTX)
    assert member["points"] == 600  # the anonymous sale's points go back with its refund


def test_a_tier_the_merge_lifts_is_a_tier_changed_that_triggers_decide():
    """Earlier anonymous sales that make the member gold once identified: `tier_changed` (reason
    `merge`) fires a "welcome to gold" trigger, once; a replayed merge fires nothing."""
    welcome = {
        "id": "welcome-gold",
        "name": "welcome gold",
        "when": {"event": "tier_changed"},
        "if": "event.to_tier == 'gold'",
        "then": [{"type": "message", "channel": "push", "template": "Welcome to gold"}],
        "guardrails": {"quiet_hours": None},
    }
    triggers = TriggerSet.build(parse_triggers([welcome], "test"))
    member = fold("m1", sale(T0 - 40 * DAY, 600, "r1"))
    member["consent"] = {"push": True}
    anon = fold("anon-x", sale(T0, 500, "r2"))
    merged = merge(member, "anon-x", anon, triggers, CTX, T0 + MIN)
    assert merged is not None and merged.record["tier"] == "gold"
    (changed,) = merged.derived
    assert (changed["type"], changed["reason"], changed["to_tier"]) == (
        "tier_changed",
        "merge",
        "gold",
    )
    assert [a["trigger_id"] for a in merged.actions] == ["welcome-gold"]
    assert merge(merged.record, "anon-x", anon, triggers, CTX, T0 + 2 * MIN) is None
    pink = fold("anon-y", sale(T0, 5, "r3"))
    quiet = merge(fold("m2", sale(T0, 5, "r4")), "anon-y", pink, triggers, CTX, T0 + MIN)
    assert quiet is not None and quiet.derived == [] and quiet.actions == []


def test_the_visit_in_progress_seen_under_two_ids_is_one_visit_after_the_merge():
    """A check-in by OpenID (the member), a WiFi association from the phone's MAC a second later
    (not linked yet: an anonymous visitor), then the portal login links the MAC: one visit."""
    member = fold("m1", {"type": "checkin", "ts": T0, "store_id": "s1"})
    anon = fold("anon-x", {"type": "checkin", "ts": T0 + 1000, "store_id": "s1"})
    assert merge_anonymous(member, "anon-x", anon, CTX)
    assert member["visits"] == 1 and member["visits_by_store"] == {"s1": 1}
    assert member["presence"]["visit_start"] == T0 and member["presence"]["last_seen"] == T0 + 1000
    earlier = fold("m2", {"type": "checkin", "ts": T0 - 2 * DAY, "store_id": "s1"})
    assert merge_anonymous(earlier, "anon-x", anon, CTX)  # two days apart: two visits
    assert earlier["visits"] == 2 and earlier["visits_by_store"] == {"s1": 2}
