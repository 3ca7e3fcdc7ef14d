"""Decides, for raw input bytes, whether they are an acceptable event, and if not, exactly why.

Pure and total: any bytes give either `Accepted` or `Rejected`, never an exception. The ingest
agent sends rejections to `dead-letter` with the reason code and message from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from contracts.inputs import HASHED_FIELDS, INPUT_SCHEMAS, InputEvent
from state.identity import keyed_hash

MAX_FUTURE_MS = 5 * 60_000  # sensor clocks drift; more than this is a broken clock
MAX_PAST_MS = 7 * 86_400_000  # older events are not "real time" any more


@dataclass(frozen=True)
class Accepted:
    event: InputEvent


@dataclass(frozen=True)
class Rejected:
    reason: str  # machine-readable, used as a metric label: a fixed, small set
    message: str  # for a person: names the field and what was wrong


REASONS = (
    "too_large",
    "not_json",
    "not_object",
    "unknown_topic",
    "unknown_kind",
    "schema",
    "ts_future",
    "ts_too_old",
    "no_identifier",
    "unknown_store",
    "currency",
)


@dataclass(frozen=True)
class Item:
    """One event of an input record: its position in a batch envelope (None for a record that is
    one event), the verdict, and the event's own bytes (for its dead letter)."""

    index: int | None
    result: Accepted | Rejected
    raw: bytes | None


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 64 * 1024  # one event's record
    max_batch_events: int = 500
    max_batch_bytes: int = 1024 * 1024  # a batch envelope's record


@dataclass(frozen=True)
class Policy:
    """What the edge accepts beyond the schemas: how old an event may be (history is loaded
    with `storepulse import`, not through the real-time path), which stores exist (None: any id)
    and the programme's currency with the rates other currencies are converted at."""

    max_past_ms: int = MAX_PAST_MS
    stores: frozenset[str] | None = None
    currency: str = "CNY"
    rates: tuple[tuple[str, float], ...] = ()


def validate_record(
    topic: str,
    raw: bytes | None,
    now_ms: int,
    limits: Limits = Limits(),
    extra_fields: frozenset[str] = frozenset(),
    secret: str = "",
    policy: Policy = Policy(),
) -> list[Item]:
    """An input record holds one event or a batch envelope `{"events": [...]}` (what WiFi and BLE
    location engines post); every event is judged on its own, so a bad one is dead-lettered at
    its index while its neighbours go on. The record is parsed once."""
    if raw is None or len(raw) > limits.max_batch_bytes:
        return [
            Item(
                None,
                validate(topic, raw, now_ms, limits.max_bytes, extra_fields, secret, policy),
                raw,
            )
        ]
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [Item(None, Rejected("not_json", f"not valid JSON: {exc}"), raw)]
    if _is_batch(data):
        return _batch(topic, data["events"], now_ms, limits, extra_fields, secret, policy)
    if len(raw) > limits.max_bytes:
        message = f"record is {len(raw)} bytes; the limit is {limits.max_bytes}"
        return [Item(None, Rejected("too_large", message), raw)]
    return [Item(None, _validate_data(topic, data, now_ms, extra_fields, secret, policy), raw)]


def _is_batch(data: Any) -> bool:
    return isinstance(data, dict) and "events" in data and "event_id" not in data


def _batch(
    topic: str,
    events: Any,
    now_ms: int,
    limits: Limits,
    extra_fields: frozenset[str],
    secret: str,
    policy: Policy,
) -> list[Item]:
    if not isinstance(events, list) or not events:
        return [Item(None, Rejected("schema", "events: expected a non-empty list of events"), None)]
    if len(events) > limits.max_batch_events:
        message = f"events: {len(events)} events; a batch holds at most {limits.max_batch_events}"
        return [Item(None, Rejected("too_large", message), None)]
    items = []
    for index, data in enumerate(events):
        raw = orjson.dumps(data)
        if len(raw) > limits.max_bytes:
            result: Accepted | Rejected = Rejected(
                "too_large", f"event is {len(raw)} bytes; the limit is {limits.max_bytes}"
            )
        else:
            result = _validate_data(topic, data, now_ms, extra_fields, secret, policy)
        items.append(Item(index, result, raw))
    return items


def validate(
    topic: str,
    raw: bytes | None,
    now_ms: int,
    max_bytes: int,
    extra_fields: frozenset[str] = frozenset(),
    secret: str = "",
    policy: Policy = Policy(),
) -> Accepted | Rejected:
    """One event's record. `extra_fields`: undeclared fields this topic keeps (every other one
    is dropped); what they hold that is shaped like a phone or a MAC is replaced by its keyed
    hash (`secret`)."""
    if raw is None:
        return Rejected("not_json", "record has no value (tombstone) on an input topic")
    if len(raw) > max_bytes:
        return Rejected("too_large", f"record is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("not_json", f"not valid JSON: {exc}")
    return _validate_data(topic, data, now_ms, extra_fields, secret, policy)


def _validate_data(
    topic: str,
    data: Any,
    now_ms: int,
    extra_fields: frozenset[str],
    secret: str,
    policy: Policy = Policy(),
) -> Accepted | Rejected:
    schema = INPUT_SCHEMAS.get(topic)
    if schema is None:
        return Rejected("unknown_topic", f"no schema for topic {topic!r}")
    if not isinstance(data, dict):
        return Rejected("not_object", f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind", schema.KINDS[0] if len(schema.KINDS) == 1 else None)
    if kind not in schema.KINDS:
        return Rejected(
            "unknown_kind",
            f"kind: {str(kind)[:40]!r} is not one of {', '.join(schema.KINDS)} on topic {topic!r}",
        )
    declared = schema.model_fields
    kept = {k: v for k, v in data.items() if k in declared or k in extra_fields}
    for name in extra_fields.intersection(kept):
        _redact_fields(kept, secret, only=name)
    try:
        event: Any = schema.model_validate(kept)
    except ValidationError as exc:
        return Rejected("schema", _describe(exc))
    except (RecursionError, ValueError) as exc:
        return Rejected("schema", f"cannot validate: {exc}"[:300])
    if event.ts > now_ms + MAX_FUTURE_MS:
        return Rejected("ts_future", f"ts: {event.ts} is more than 5 minutes in the future")
    if event.ts < now_ms - policy.max_past_ms and not event.history:
        days = policy.max_past_ms / 86_400_000
        return Rejected(
            "ts_too_old",
            f"ts: {event.ts} is more than {days:g} days in the past (STOREPULSE_MAX_EVENT_AGE; "
            "load history with `storepulse import`)",
        )
    if topic == "checkins" and not any((event.member_id, event.app_device_id, event.openid)):
        return Rejected("no_identifier", "no identifier: give member_id, app_device_id or openid")
    store_id = getattr(event, "store_id", None)
    if policy.stores is not None and store_id is not None and store_id not in policy.stores:
        return Rejected(
            "unknown_store",
            f"store_id: {store_id[:64]!r} is not in the store registry (add it, then replay "
            "this dead letter; or set accept_unknown_stores: true in the registry)",
        )
    if topic == "pos" and event.currency != policy.currency:
        return _converted(event, policy)
    return Accepted(event)


def _converted(event: Any, policy: Policy) -> Accepted | Rejected:
    """A sale or refund in another currency, in the programme's at the configured rate (the
    original amount and currency kept on the event); without a rate it is dead-lettered."""
    rate = dict(policy.rates).get(event.currency)
    if rate is None:
        return Rejected(
            "currency",
            f"currency: {event.currency} is not the programme's ({policy.currency}) and has no "
            "rate in exchange_rates (config/loyalty.yaml)",
        )
    items = [i.model_copy(update={"price": round(i.price * rate, 2)}) for i in event.items]
    converted = event.model_copy(
        update={"total": round(event.total * rate, 2), "currency": policy.currency, "items": items}
    )
    extra = converted.__pydantic_extra__
    if extra is not None:
        extra.update(original_currency=event.currency, original_total=event.total)
    return Accepted(converted)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)[:500]


_MAC = (
    r"(?i)(?<![0-9a-f])"
    r"(?:[0-9a-f]{2}(?:[:\-][0-9a-f]{2}){5}|[0-9a-f]{4}(?:\.[0-9a-f]{4}){2})"
    r"(?![0-9a-f])"
)
# CN mobiles with or without +86 and separators (138-1234-5678), and any +country number.
_PHONE = (
    r"(?<![\d+])(?:(?:\+|00)?86[ \-]?)?1[3-9]\d(?:[ \-]?\d){8}(?!\d)"
    r"|(?<![\d+])\+\d{1,3}[ \-]?\d(?:[ \-]?\d){5,13}(?!\d)"
)
_MAC_TEXT, _PHONE_TEXT = re.compile(_MAC.encode()), re.compile(_PHONE.encode())
_MAC_STR, _PHONE_STR = re.compile(_MAC), re.compile(_PHONE)


def redact(raw: bytes | None, secret: str) -> tuple[bytes | None, bool]:
    """Replace phones and MACs in a rejected record by their keyed hash.

    In JSON: the identifier fields by name, and anything shaped like a phone number or a MAC in
    any value, however deep; in other bytes: anything so shaped. The untouched original stays in
    the source topic at the recorded offset for its retention, for whoever may read it.
    """
    if not raw:
        return raw, False
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict | list):
        changed = _redact_fields(data, secret)
        return (orjson.dumps(data), True) if changed else (raw, False)
    scrubbed = _MAC_TEXT.sub(lambda m: _hash_bytes(m, "mac", secret), raw)
    scrubbed = _PHONE_TEXT.sub(lambda m: _hash_bytes(m, "phone", secret), scrubbed)
    return scrubbed, scrubbed != raw


def redact_text(text: str, secret: str) -> str:
    """`redact` for a message or a log line."""
    text = _MAC_STR.sub(lambda m: keyed_hash(secret, "mac", m.group(0)), text)
    return _PHONE_STR.sub(lambda m: keyed_hash(secret, "phone", m.group(0)), text)


def _hash_bytes(match: re.Match[bytes], kind: str, secret: str) -> bytes:
    value = match.group(0).decode(errors="replace")
    return keyed_hash(secret, kind, value).encode()


def _redact_value(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return redact_text(value, secret)
    if isinstance(value, int) and not isinstance(value, bool) and _PHONE_STR.fullmatch(str(value)):
        return keyed_hash(secret, "phone", str(value))
    return value


def _redact_fields(node: Any, secret: str, only: str | None = None) -> bool:
    """Hash identifiers in place, in every value below `node` (or below key `only`)."""
    changed = False
    if isinstance(node, dict):
        for k, v in node.items():
            if only is not None and k != only:
                continue
            if k in HASHED_FIELDS and isinstance(v, str | int) and not isinstance(v, bool):
                node[k] = keyed_hash(secret, k, str(v))
                changed = True
            elif isinstance(v, dict | list):
                changed |= _redact_fields(v, secret)
            else:
                new = _redact_value(v, secret)
                if new != v:
                    node[k], changed = new, True
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict | list):
                changed |= _redact_fields(item, secret)
            else:
                new = _redact_value(item, secret)
                if new != item:
                    node[i], changed = new, True
    return changed
