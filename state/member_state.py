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
    kind = event["type"]
    if kind == "checkin":
        _apply_checkin(state, event, tz)
    elif kind == "profile":
        _apply_profile(state, event)
    state["last_seen_ts"] = max(int(event["ts"]), state.get("last_seen_ts") or 0)
    return state


PROFILE_FIELDS = ("tier", "birthday", "consent", "tags", "home_store", "first_name")


def _apply_profile(state: MemberRecord, event: Mapping[str, Any]) -> None:
    """CRM is the master of these fields: the latest profile replaces them."""
    for name in PROFILE_FIELDS:
        if name in event:
            state[name] = event[name]


MAX_MERGED_IDS = 20


def merge_anonymous(state: MemberRecord, anon_id: str, anon: Mapping[str, Any]) -> bool:
    """Fold an anonymous visitor's history into a member, once per anonymous id.

    Deterministic and idempotent: replaying the same merge changes nothing.
    """
    merged = list(state.get("merged_from") or [])
    if anon_id in merged:
        return False
    state["visits"] = state["visits"] + int(anon.get("visits") or 0)
    firsts = [t for t in (state["first_visit_ts"], anon.get("first_visit_ts")) if t]
    state["first_visit_ts"] = min(firsts) if firsts else None
    by_store = dict(state["visits_by_store"])
    for store, count in (anon.get("visits_by_store") or {}).items():
        by_store[store] = by_store.get(store, 0) + int(count)
    state["visits_by_store"] = by_store
    if (anon.get("last_visit_ts") or 0) > (state["last_visit_ts"] or 0):
        same_day = anon.get("last_visit_day") == state["last_visit_day"]
        state["prev_visit_ts"] = state["last_visit_ts"] or anon.get("prev_visit_ts")
        state["last_visit_ts"] = anon["last_visit_ts"]
        state["last_visit_day"] = anon.get("last_visit_day")
        state["last_store"] = anon.get("last_store")
        state["checkins_today"] = int(anon.get("checkins_today") or 0) + (
            state["checkins_today"] if same_day else 0
        )
    elif anon.get("last_visit_day") == state["last_visit_day"]:
        state["checkins_today"] += int(anon.get("checkins_today") or 0)
    state["merged_from"] = [*merged, anon_id][-MAX_MERGED_IDS:]
    return True


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
