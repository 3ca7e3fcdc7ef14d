"""The per-member record and the pure functions that fold events into it.

A record is a plain dict (stored with orjson), kept small: counters and the few timestamps that
triggers ask about, never raw event history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

MemberRecord = dict[str, Any]


def new_member(member_id: str) -> MemberRecord:
    return {
        "member_id": member_id,
        "anonymous": member_id.startswith("anon-"),
        "visits": 0,
        "first_visit_ts": None,
        "last_visit_ts": None,
        "prev_visit_ts": None,
        "last_visit_day": None,
        "last_store": None,
        "checkins_today": 0,
        "visits_by_store": {},
        "fired": {},
    }


def local_day(ts_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz).date().isoformat()


def apply_event(
    record: Mapping[str, Any] | None, event: Mapping[str, Any], tz: ZoneInfo
) -> MemberRecord:
    """Return the member record after `event` (the input is not modified)."""
    state = dict(record) if record else new_member(event["member_id"])
    if event["type"] == "checkin":
        _apply_checkin(state, event, tz)
    return state


def _apply_checkin(state: MemberRecord, event: Mapping[str, Any], tz: ZoneInfo) -> None:
    ts = int(event["ts"])
    day = local_day(ts, tz)
    store = event.get("store_id")
    new_day = state["last_visit_day"] != day
    if new_day or state["last_store"] != store:
        # A check-in in a store not yet visited today opens a visit.
        state["visits"] += 1
        state["prev_visit_ts"] = state["last_visit_ts"]
        state["first_visit_ts"] = state["first_visit_ts"] or ts
        by_store = dict(state["visits_by_store"])
        by_store[store] = by_store.get(store, 0) + 1
        state["visits_by_store"] = by_store
    state["checkins_today"] = 1 if new_day else state["checkins_today"] + 1
    state["last_visit_day"] = day
    state["last_visit_ts"] = max(ts, state["last_visit_ts"] or 0)
    state["last_store"] = store


def record_fires(state: MemberRecord, fired_trigger_ids: Iterable[str], now_ms: int) -> None:
    """Remember when each trigger last fired for this member and how often (cooldowns, caps)."""
    fired = dict(state.get("fired") or {})
    for trigger_id in fired_trigger_ids:
        _, count = fired.get(trigger_id, (0, 0))
        fired[trigger_id] = [now_ms, count + 1]
    state["fired"] = fired
