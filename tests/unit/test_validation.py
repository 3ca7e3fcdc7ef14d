"""The edge: any bytes give an accepted event or a reason, never an exception."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.validation import REASONS, Accepted, Rejected, validate
from tests.conftest import now_ms

LIMIT = 64 * 1024


def test_undeclared_fields_are_dropped_unless_the_topic_keeps_them(checkin_factory):
    event = checkin_factory(firmware="2.1", customer_phone="13912345678")
    result = validate("checkins", orjson.dumps(event), now_ms(), LIMIT)
    assert isinstance(result, Accepted)
    assert result.event.model_extra == {}  # a raw phone in an unknown field never passes
    kept = validate(
        "checkins", orjson.dumps(event), now_ms(), LIMIT, frozenset({"firmware"}), "s" * 16
    )
    assert isinstance(kept, Accepted) and kept.event.model_extra == {"firmware": "2.1"}
    phone = validate(
        "checkins", orjson.dumps(event), now_ms(), LIMIT, frozenset({"customer_phone"}), "s" * 16
    )
    assert isinstance(phone, Accepted)
    assert phone.event.model_extra["customer_phone"].startswith("h")  # kept, but hashed


def test_missing_field_is_named(checkin_factory):
    event = checkin_factory()
    del event["store_id"]
    result = validate("checkins", orjson.dumps(event), now_ms(), LIMIT)
    assert isinstance(result, Rejected) and result.reason == "schema"
    assert result.message.startswith("store_id:")


def test_old_event_is_rejected(checkin_factory):
    event = checkin_factory(ts=now_ms() - 8 * 86_400_000)
    result = validate("checkins", orjson.dumps(event), now_ms(), LIMIT)
    assert isinstance(result, Rejected) and result.reason == "ts_too_old"


def test_oversized_record_is_rejected_before_parsing():
    result = validate("checkins", b" " * (LIMIT + 1), now_ms(), LIMIT)
    assert isinstance(result, Rejected) and result.reason == "too_large"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw):
    result = validate("checkins", raw, now_ms(), LIMIT)
    assert isinstance(result, Accepted | Rejected)
    if isinstance(result, Rejected):
        assert result.reason in REASONS and result.message


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "ts",
                "kind",
                "store_id",
                "member_id",
                "app_device_id",
                "openid",
                "channel",
                "x",
            ]
        ),
        _json,
    )
)
def test_random_json_objects_never_raise(obj):
    result = validate("checkins", json.dumps(obj).encode(), now_ms(), LIMIT)
    assert isinstance(result, Accepted | Rejected)


def test_dead_letter_log_lines_are_throttled_per_topic_and_reason(caplog):
    from edge.dead_letters import LogThrottle

    throttle = LogThrottle(burst=3, window_s=10)
    allowed = [throttle.allow("pos", "schema", t * 0.1) for t in range(50)]
    assert allowed[:3] == [True] * 3 and not any(allowed[3:])  # a flood: 3 lines, not 50
    assert throttle.allow("pos", "not_json", 5.0)  # another reason has its own budget
    with caplog.at_level("WARNING", logger="storepulse.dead_letters"):
        assert throttle.allow("pos", "schema", 11.0)  # next window: logs again...
    assert "47 more dead letters from pos for schema" in caplog.text  # ...and says what it skipped


def test_a_batch_envelope_is_judged_event_by_event(checkin_factory):
    from edge.validation import Limits, Rejected, validate_record

    good, other = checkin_factory(), checkin_factory()
    bad = {**checkin_factory(), "store_id": None}
    raw = orjson.dumps({"events": [good, bad, "not an object", other]})
    items = validate_record("checkins", raw, now_ms(), Limits())
    assert [i.index for i in items] == [0, 1, 2, 3]
    assert [type(i.result).__name__ for i in items] == [
        "Accepted",
        "Rejected",
        "Rejected",
        "Accepted",
    ]
    assert items[1].result.reason == "schema" and "store_id" in items[1].result.message
    assert isinstance(items[2].result, Rejected) and items[2].result.reason == "not_object"
    assert orjson.loads(items[1].raw) == bad  # the dead letter carries that event alone
    single = validate_record("checkins", orjson.dumps(good), now_ms(), Limits())
    assert len(single) == 1 and single[0].index is None and isinstance(single[0].result, Accepted)


def test_batch_limits_are_enforced(checkin_factory):
    from edge.validation import Limits, validate_record

    limits = Limits(max_bytes=2000, max_batch_events=3, max_batch_bytes=8000)
    many = orjson.dumps({"events": [checkin_factory() for _ in range(4)]})
    (only,) = validate_record("checkins", many, now_ms(), limits)
    assert only.result.reason == "too_large" and "at most 3" in only.result.message
    fat = {**checkin_factory(), "openid": "o" * 100}
    huge = orjson.dumps({"events": [fat] * 3 + [{**fat, "padding": "x" * 9000}]})
    (whole,) = validate_record("checkins", huge, now_ms(), limits)
    assert whole.result.reason == "too_large"  # the record itself is over the batch bytes
    big_single = orjson.dumps({**checkin_factory(), "padding": "x" * 3000})
    (one,) = validate_record("checkins", big_single, now_ms(), limits)
    assert one.result.reason == "too_large" and one.index is None
    empty = validate_record("checkins", b'{"events": []}', now_ms(), limits)
    assert empty[0].result.reason == "schema"


def _sale(**fields):
    return {
        "event_id": "s-1",
        "ts": now_ms(),
        "kind": "sale",
        "store_id": "sh-jingan",
        "receipt_id": "r1",
        "total": 100.0,
        "member_id": "m1",
        "items": [{"sku": "a", "qty": 1, "price": 100.0}],
        **fields,
    }


def test_a_sale_in_another_currency_is_converted_or_dead_lettered():
    from edge.validation import Policy

    policy = Policy(currency="CNY", rates=(("GBP", 9.0),))
    gbp = validate("pos", orjson.dumps(_sale(currency="GBP")), now_ms(), LIMIT, policy=policy)
    assert isinstance(gbp, Accepted)
    event = gbp.event
    assert (event.total, event.currency, event.items[0].price) == (900.0, "CNY", 900.0)
    assert event.model_extra == {"original_currency": "GBP", "original_total": 100.0}
    usd = validate("pos", orjson.dumps(_sale(currency="USD")), now_ms(), LIMIT, policy=policy)
    assert isinstance(usd, Rejected) and usd.reason == "currency" and "USD" in usd.message
    cny = validate("pos", orjson.dumps(_sale()), now_ms(), LIMIT, policy=policy)
    assert isinstance(cny, Accepted) and cny.event.total == 100.0


def test_an_unknown_store_and_old_history_are_dead_lettered_by_policy():
    from edge.validation import Policy

    known = Policy(stores=frozenset({"sh-jingan"}))
    other = validate("pos", orjson.dumps(_sale(store_id="xx-1")), now_ms(), LIMIT, policy=known)
    assert isinstance(other, Rejected) and other.reason == "unknown_store"
    assert isinstance(
        validate("pos", orjson.dumps(_sale()), now_ms(), LIMIT, policy=known), Accepted
    )
    old = orjson.dumps(_sale(ts=now_ms() - 30 * 86_400_000))
    assert validate("pos", old, now_ms(), LIMIT).reason == "ts_too_old"
    year = Policy(max_past_ms=400 * 86_400_000)
    assert isinstance(validate("pos", old, now_ms(), LIMIT, policy=year), Accepted)
