"""Presence: store visits and zone dwell from check-ins, WiFi and beacons, as pure functions.

A visit starts at the first sighting in a store and ends when the member has not been seen for the
store's visit timeout (or is seen in another store). Zones come from beacons and WiFi access points
mapped in the store registry, with an RSSI hysteresis (enter at or above `enter_rssi`, leave below
`exit_rssi`) so a shopper between two zones does not flap. Derived events (visit_started,
visit_ended, zone_entered, zone_left, zone_dwell) carry deterministic ids and times, so a replay of
the same input gives the same events. With no zone signal for the store's `zone_timeout` the member
is taken to have left the zone at that moment: dwell never counts time nobody saw them there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from state.records import MemberRecord
from state.stores import DEFAULT_STORE, Store

Derived = dict[str, Any]
ZoneSignal = Literal["enter", "leave", "keep"]


@dataclass(frozen=True)
class Sighting:
    ts: int
    store_id: str
    zone: str | None = None
    signal: ZoneSignal = "keep"


def sighting_of(event: Mapping[str, Any], store: Store) -> Sighting | None:
    """What a raw event says about where the member is; None when it says nothing."""
    kind, ts = event["type"], int(event["ts"])
    if kind == "checkin":
        return Sighting(ts, store.id)
    rssi = event.get("rssi")
    if kind == "wifi":
        if rssi is None or rssi < store.presence_rssi:
            return None  # a phone walking past the shop window
        zone = event.get("zone_id") or store.wifi_aps.get(event.get("ap_id", ""))
        return Sighting(ts, store.id, zone, _by_rssi(rssi, store) if zone else "keep")
    if kind == "beacon":
        zone = event.get("zone_id") or store.beacons.get(event.get("beacon_id", ""))
        if zone is None:
            return Sighting(ts, store.id)
        if event.get("kind") == "exit":
            return Sighting(ts, store.id, zone, "leave")
        near = event.get("proximity") in ("immediate", "near")
        signal = "enter" if near and event.get("kind") == "enter" else _by_rssi(rssi, store)
        return Sighting(ts, store.id, zone, signal)
    return None


def _by_rssi(rssi: int | None, store: Store) -> ZoneSignal:
    if rssi is None:
        return "keep"
    if rssi >= store.enter_rssi:
        return "enter"
    if rssi < store.exit_rssi:
        return "leave"
    return "keep"


def _derived(
    record: Mapping[str, Any], kind: str, ts: int, store_id: str, key: str, **attrs: Any
) -> Derived:
    member = record["member_id"]
    return {
        "event_id": f"{member}:{key}",
        "member_id": member,
        "type": kind,
        "ts": ts,
        "store_id": store_id,
        "derived": True,
        **attrs,
    }


def thresholds_for(store: Store, extra: Iterable[int]) -> list[int]:
    """The store's dwell thresholds plus those triggers ask for (`dwell: at_least`)."""
    return sorted(set(store.dwell_thresholds_ms) | set(extra))


def advance(
    record: MemberRecord, now: int, stores: Mapping[str, Store], extra_dwell: Iterable[int] = ()
) -> list[Derived]:
    """Fire what time alone decides up to `now`, in time order: dwell thresholds, leaving a zone
    with no signal for the store's zone timeout, and the end of the visit."""
    p: Any = record.get("presence")  # the visit in progress (records.Presence)
    if not p:
        return []
    store = stores.get(p["store"], DEFAULT_STORE)
    visit_end = p["last_seen"] + store.visit_timeout_ms
    out: list[Derived] = []
    if p.get("zone"):
        zone_end = min(p["zone_seen"] + store.zone_timeout_ms, visit_end)
        out += _fire_dwell(record, store, min(now, zone_end), thresholds_for(store, extra_dwell))
        if now >= zone_end:
            out += _leave_zone(record, zone_end)
    if now >= visit_end:
        out += end_visit(record, visit_end)
    return out


def _fire_dwell(
    record: MemberRecord, store: Store, until: int, thresholds: list[int]
) -> list[Derived]:
    """Each threshold once per zone stay; `dwell_done` is the largest one fired (ms)."""
    p: Any = record["presence"]  # the visit in progress (records.Presence)
    out: list[Derived] = []
    for threshold in thresholds:
        if threshold <= p["dwell_done"]:
            continue
        due = p["zone_since"] + threshold
        if due > until:
            break
        p["dwell_done"] = threshold
        zone = store.zone_by_id.get(p["zone"])
        out.append(
            _derived(
                record,
                "zone_dwell",
                due,
                p["store"],
                f"zone:{p['zone']}:{p['zone_since']}:dwell:{threshold}",
                zone_id=p["zone"],
                zone_category=zone.category if zone else "general",
                dwell_ms=threshold,
                dwell_min=threshold // 60_000,
            )
        )
    return out


def end_visit(record: MemberRecord, at: int) -> list[Derived]:
    p: Any = record.get("presence")  # the visit in progress (records.Presence)
    if not p:
        return []
    out = _leave_zone(record, at)
    out.append(
        _derived(
            record,
            "visit_ended",
            at,
            p["store"],
            f"visit:{p['visit_start']}:ended",
            duration_ms=p["last_seen"] - p["visit_start"],
            zone_ms=dict(p["zone_ms"]),
            visit_start=p["visit_start"],
        )
    )
    record["presence"] = None
    record["last_visit_end"] = at
    return out


def _leave_zone(record: MemberRecord, at: int) -> list[Derived]:
    p: Any = record["presence"]  # the visit in progress (records.Presence)
    zone = p.get("zone")
    if not zone:
        return []
    left = max(p["zone_since"], at)
    dwell = left - p["zone_since"]
    p["zone_ms"] = {**p["zone_ms"], zone: p["zone_ms"].get(zone, 0) + dwell}
    since = p["zone_since"]
    p.update(zone=None, zone_since=None, dwell_done=0)
    return [
        _derived(
            record,
            "zone_left",
            left,
            p["store"],
            f"zone:{zone}:{since}:left",
            zone_id=zone,
            dwell_ms=dwell,
        )
    ]


def apply_sighting(
    record: MemberRecord,
    s: Sighting,
    stores: Mapping[str, Store],
    extra_dwell: Iterable[int] = (),
) -> list[Derived]:
    """Fold one sighting into the record; returns the derived events it causes, in time order.
    `extra_dwell`: the triggers' own thresholds, as for `advance` (a sighting that passed the
    store's 10 minutes without them marked an 8-minute trigger threshold as done, unfired)."""
    out = advance(record, s.ts, stores, extra_dwell)
    p: Any = record.get("presence")  # the visit in progress (records.Presence)
    if p and p["store"] != s.store_id and s.ts >= p["last_seen"]:
        out += end_visit(record, s.ts)  # seen in another store: the previous visit is over
        p = None
    if not p:
        if record.get("presence") is None and s.ts < (record.get("last_visit_end") or 0):
            return out  # a late sighting from a visit already closed: nothing to reopen
        out.append(_start_visit(record, s))
        p = record["presence"]
    p["last_seen"] = max(p["last_seen"], s.ts)
    if s.zone and s.ts >= p["zone_seen"]:
        p["zone_seen"] = s.ts
        if s.signal == "enter" and s.zone != p.get("zone"):
            out += _leave_zone(record, s.ts)
            p.update(zone=s.zone, zone_since=s.ts, dwell_done=0)
            zone = stores.get(s.store_id, DEFAULT_STORE).zone_by_id.get(s.zone)
            out.append(
                _derived(
                    record,
                    "zone_entered",
                    s.ts,
                    s.store_id,
                    f"zone:{s.zone}:{s.ts}:entered",
                    zone_id=s.zone,
                    zone_category=zone.category if zone else "general",
                )
            )
        elif s.signal == "leave" and s.zone == p.get("zone"):
            p["last_seen"] = max(p["last_seen"], s.ts)
            out += _leave_zone(record, s.ts)
    return out


def _start_visit(record: MemberRecord, s: Sighting) -> Derived:
    previous = record.get("last_visit_ts")
    record["visits"] = record.get("visits", 0) + 1
    record["prev_visit_ts"] = previous
    record["last_visit_ts"] = s.ts
    record["first_visit_ts"] = record.get("first_visit_ts") or s.ts
    record["last_visit_store"] = s.store_id  # which store a merge's overlapping visit was in
    by_store = dict(record.get("visits_by_store") or {})
    by_store[s.store_id] = by_store.get(s.store_id, 0) + 1
    record["visits_by_store"] = by_store
    record["presence"] = {
        "store": s.store_id,
        "visit_start": s.ts,
        "last_seen": s.ts,
        "zone": None,
        "zone_since": None,
        "zone_seen": 0,
        "dwell_done": 0,
        "zone_ms": {},
    }
    days = None if previous is None else round((s.ts - previous) / 86_400_000, 3)
    return _derived(
        record,
        "visit_started",
        s.ts,
        s.store_id,
        f"visit:{s.ts}:started",
        visit_number=record["visits"],
        first_visit=previous is None,
        days_since_prev_visit=days,
    )


def next_due(
    record: Mapping[str, Any], stores: Mapping[str, Store], extra_dwell: Iterable[int] = ()
) -> int | None:
    """When time alone will next change this member's presence (for the timer schedule)."""
    p: Any = record.get("presence")  # the visit in progress (records.Presence)
    if not p:
        return None
    store = stores.get(p["store"], DEFAULT_STORE)
    due = p["last_seen"] + store.visit_timeout_ms
    if p.get("zone"):
        due = min(due, p["zone_seen"] + store.zone_timeout_ms)
        later = [t for t in thresholds_for(store, extra_dwell) if t > p["dwell_done"]]
        if later:
            due = min(due, p["zone_since"] + later[0])
    return int(due)
