"""Folding check-ins into a member record: visits, per-store counts, store-local days."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from state.member_state import apply_event

TZ = ZoneInfo("Asia/Shanghai")
DAY = 86_400_000
T0 = 1_764_000_000_000 + 10 * 3_600_000  # 10:00 in Shanghai


def checkin(ts, store="s1"):
    return {"type": "checkin", "ts": ts, "member_id": "m1", "event_id": str(ts), "store_id": store}


def test_visits_count_per_day_and_store():
    r = apply_event(None, checkin(T0), TZ)
    r = apply_event(r, checkin(T0 + 60_000), TZ)  # same store, same day: same visit
    assert (r["visits"], r["checkins_today"]) == (1, 2)
    r = apply_event(r, checkin(T0 + 120_000, "s2"), TZ)  # another store: a new visit
    r = apply_event(r, checkin(T0 + DAY), TZ)  # next day
    assert r["visits"] == 3 and r["checkins_today"] == 1
    assert r["visits_by_store"] == {"s1": 2, "s2": 1}
    assert r["first_visit_ts"] == T0 and r["prev_visit_ts"] == T0 + 120_000


def test_day_boundary_is_store_local():
    late = T0 + 13 * 3_600_000 + 30 * 60_000  # 23:30 Shanghai
    r = apply_event(None, checkin(late), TZ)
    r = apply_event(r, checkin(late + 40 * 60_000), TZ)  # 00:10 next local day
    assert r["checkins_today"] == 1 and r["visits"] == 2


def test_input_record_is_not_modified():
    r = apply_event(None, checkin(T0), TZ)
    snapshot = dict(r)
    apply_event(r, checkin(T0 + DAY, "s2"), TZ)
    assert r == snapshot
