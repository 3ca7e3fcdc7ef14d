"""What trigger text may name: event types, and the fields of event, member, store and now with
their kinds, so that a definition that cannot work is refused when it is published.

Kinds: number, text, bool, list, map (known keys: a nested dict; free keys: `MAP`) and any.
Kept by hand beside the folds that write these fields; tests/unit/test_catalog.py checks it
against the input schemas and against what the folds actually produce.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

NUMBER, TEXT, BOOL, LIST, ANY = "number", "text", "bool", "list", "any"
MAP = "map"  # a dict whose keys are data (store ids, trigger ids, days): any key, any value

Spec: TypeAlias = "str | Mapping[str, Spec]"

# Fields every member event has (agents/members.event_scope) and what ingest adds.
_COMMON: dict[str, Spec] = {
    "event_id": TEXT,
    "member_id": TEXT,
    "type": TEXT,
    "ts": NUMBER,
    "store_id": TEXT,
    "kind": TEXT,
    "identified_by": TEXT,
}
_DERIVED: dict[str, Spec] = {"derived": BOOL}

# Event type on member-events -> its own fields (besides _COMMON).
EVENT_FIELDS: dict[str, dict[str, Spec]] = {
    "checkin": {"channel": TEXT},
    "wifi": {"ap_id": TEXT, "rssi": NUMBER, "zone_id": TEXT},
    "beacon": {"beacon_id": TEXT, "rssi": NUMBER, "zone_id": TEXT, "proximity": TEXT},
    "purchase": {
        "receipt_id": TEXT,
        "total": NUMBER,
        "currency": TEXT,
        "items": LIST,
        "coupons": LIST,
        "original_receipt_id": TEXT,
        "spend_today_before": NUMBER,
        "points_delta": NUMBER,
    },
    "profile": {
        "tier": TEXT,
        "birthday": TEXT,
        "consent": MAP,
        "tags": LIST,
        "home_store": TEXT,
        "first_name": TEXT,
    },
    "identity": {},
    "visit_started": {
        **_DERIVED,
        "visit_number": NUMBER,
        "first_visit": BOOL,
        "days_since_prev_visit": NUMBER,
    },
    "visit_ended": {**_DERIVED, "duration_ms": NUMBER, "zone_ms": MAP, "visit_start": NUMBER},
    "zone_entered": {**_DERIVED, "zone_id": TEXT, "zone_category": TEXT},
    "zone_left": {**_DERIVED, "zone_id": TEXT, "dwell_ms": NUMBER},
    "zone_dwell": {
        **_DERIVED,
        "zone_id": TEXT,
        "zone_category": TEXT,
        "dwell_ms": NUMBER,
        "dwell_min": NUMBER,
    },
    "tier_changed": {
        **_DERIVED,
        "from_tier": TEXT,
        "to_tier": TEXT,
        "direction": TEXT,
        "reason": TEXT,
    },
}
EVENT_FIELDS["refund"] = EVENT_FIELDS["purchase"]
EVENT_TYPES = frozenset(EVENT_FIELDS)

# What a timer-made event of an absence or delay pattern carries (triggers.engine.evaluate_due).
DUE_FIELDS: dict[str, Spec] = {
    **_COMMON,
    "zone_id": TEXT,
    "due": NUMBER,
    "started_at": NUMBER,
}

_PRESENCE: dict[str, Spec] = {
    "store": TEXT,
    "visit_start": NUMBER,
    "last_seen": NUMBER,
    "zone": TEXT,
    "zone_since": NUMBER,
    "zone_seen": NUMBER,
    "dwell_done": NUMBER,
    "zone_ms": MAP,
}
_PURCHASES: dict[str, Spec] = {
    "days": MAP,
    "months": MAP,
    "receipts": MAP,
    "settled": LIST,
    "first_ts": NUMBER,
    "last_ts": NUMBER,
    "categories": LIST,
    "brands": LIST,
    "basket_items": NUMBER,
    "basket_total": NUMBER,
    "spend_day": TEXT,
    "spend_today": NUMBER,
}
# state.member_state.new_member and the folds, plus what member_scope derives at `now`.
MEMBER_FIELDS: dict[str, Spec] = {
    "member_id": TEXT,
    "anonymous": BOOL,
    "visits": NUMBER,
    "first_visit_ts": NUMBER,
    "last_visit_ts": NUMBER,
    "prev_visit_ts": NUMBER,
    "last_visit_end": NUMBER,
    "last_seen_ts": NUMBER,
    "visits_by_store": MAP,
    "presence": _PRESENCE,
    "checkins_today": NUMBER,
    "checkin_day": TEXT,
    "points": NUMBER,
    "growth": NUMBER,
    "fired": MAP,
    "sent": MAP,
    "pending": MAP,
    "held": LIST,
    "coupons": MAP,
    "converted": MAP,
    "armed": MAP,
    "merged_from": LIST,
    "decisions": LIST,
    "purchases": _PURCHASES,
    "birthday": TEXT,
    "consent": {"push": BOOL, "sms": BOOL, "wechat": BOOL, "email": BOOL},
    "tags": LIST,
    "crm_tags": LIST,
    "consent_at": MAP,
    "last_visit_store": TEXT,
    "home_store": TEXT,
    "first_name": TEXT,
    "tier": TEXT,
    "crm_tier": TEXT,
    "recency_days": NUMBER,
    "f30": NUMBER,
    "m30": NUMBER,
    "f90": NUMBER,
    "m90": NUMBER,
    "f365": NUMBER,
    "m365": NUMBER,
    "in_store": BOOL,
    "store_id": TEXT,
    "zone_id": TEXT,
    "days_since_prev_visit": NUMBER,
    "birthday_month": BOOL,
    "member_day": BOOL,
}
STORE_FIELDS: dict[str, Spec] = {"id": TEXT, "name": TEXT, "timezone": TEXT}
NOW_FIELDS: dict[str, Spec] = {
    "ts": NUMBER,
    "hour": NUMBER,
    "minute": NUMBER,
    "weekday": NUMBER,
    "month": NUMBER,
    "day": NUMBER,
    "date": TEXT,
}


def event_fields(types: Iterable[str], due: bool = False, extra: Iterable[str] = ()) -> dict:
    """Fields an `event` of any of these types may carry (a trigger on several types sees a
    field that only some of them have as null on the others)."""
    found: dict[str, Spec] = dict(DUE_FIELDS if due else _COMMON)
    for t in types:
        found.update(EVENT_FIELDS.get(t, {}))
    found.update({name: ANY for name in extra if name not in found})
    return found


def roots(event: Mapping[str, Spec]) -> dict[str, Spec]:
    """The four names a condition starts from, with the fields each one has."""
    return {"event": event, "member": MEMBER_FIELDS, "store": STORE_FIELDS, "now": NOW_FIELDS}


def nearest(name: str, known: Iterable[str]) -> str:
    """`" (did you mean `checkin`?)"`, or nothing when no known name is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


@dataclass(frozen=True)
class References:
    """What this deployment has configured: definitions naming anything else are refused.

    Passed to pydantic as validation context (`TriggerDef.model_validate(raw, context=...)`);
    without it only what the code itself knows (event types, fields) is checked."""

    pools: frozenset[str] = frozenset()
    stores: frozenset[str] = frozenset()
    zones: frozenset[str] = frozenset()
    extra_event_fields: frozenset[str] = frozenset()


def references_of(context: Any) -> References | None:
    return context if isinstance(context, References) else None
