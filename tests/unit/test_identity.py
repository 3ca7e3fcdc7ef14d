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
from state.member_state import merge_anonymous, new_member

SECRET = "unit-test-secret-0123456789"


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
    assert merge_anonymous(a, "anon-x", anon) and merge_anonymous(b, "anon-x", anon)
    assert a == b
    assert a["visits"] == 3 and a["visits_by_store"] == {"s1": 1, "s2": 2}
    assert a["first_visit_ts"] == 5000 and a["last_visit_ts"] == 9000
    assert a["presence"]["store"] == "s2"  # the visitor is in a store right now
    assert a["checkins_today"] == 2 and a["prev_visit_ts"] == 5000
    assert not merge_anonymous(a, "anon-x", anon)  # a replay changes nothing
    assert a["visits"] == 3
