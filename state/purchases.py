"""Purchases: RFM over rolling 30/90/365 days, baskets, points, growth value and tiers.

Spend is kept as per-day buckets for the last 90 days and per-month buckets up to 13 months, so
a member's record stays small however often they buy; the 365-day window is exact to the month.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from state.loyalty import Loyalty
from state.records import MemberRecord

Derived = dict[str, Any]
RECEIPTS_KEPT = 20
SETTLED_KEPT = 32  # sales and refunds recognised when they come again (about 500 bytes)
RECENT_KEPT = 5
DAILY_DAYS = 90


def local_date(ts_ms: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, tz).date()


def _new_purchases() -> dict[str, Any]:
    return {
        "days": {},
        "months": {},
        "receipts": {},
        "first_ts": None,
        "last_ts": None,
        "categories": [],
        "brands": [],
        "basket_items": 0,
        "basket_total": 0.0,
        "spend_day": None,
        "spend_today": 0.0,
    }


def _recent(items: list[str], new: list[str]) -> list[str]:
    merged = [x for x in new if x] + [x for x in items if x not in new]
    return list(dict.fromkeys(merged))[:RECENT_KEPT]


def _add(buckets: dict[str, list[float]], key: str, count: int, amount: float) -> None:
    n, total = buckets.get(key, [0, 0.0])
    buckets[key] = [int(n + count), round(total + amount, 2)]


def _compact(p: dict[str, Any], today: date) -> None:
    """Roll days older than 90 days into months; forget months older than 13."""
    cutoff = (today - timedelta(days=DAILY_DAYS)).isoformat()
    for day in [d for d in p["days"] if d < cutoff]:
        n, amount = p["days"].pop(day)
        _add(p["months"], day[:7], n, amount)
    oldest = (today.replace(day=1) - timedelta(days=396)).isoformat()[:7]
    for month in [m for m in p["months"] if m < oldest]:
        del p["months"][month]


def receipt_key(event: Mapping[str, Any], receipt_id: str | None = None) -> str:
    """A sale's natural key: receipt ids are unique per store (tills number from 1), not
    across a chain."""
    return f"{event.get('store_id') or ''}/{receipt_id or event['receipt_id']}"


def _settled_hash(kind: str, rkey: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{kind}:{rkey}".encode(), digest_size=6).digest(), "big")


def counted_before(record: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """Whether this member already counted this sale or refund (same store, receipt id and
    kind): what keeps points and spend right when the edge's de-duplication key is gone (a
    Redis loss, a resend after its 24 h window). The last SETTLED_KEPT are remembered."""
    p = record.get("purchases")
    if not p or not event.get("receipt_id"):
        return False
    return _settled_hash(event["type"], receipt_key(event)) in (p.get("settled") or ())


def apply_purchase(
    record: MemberRecord, event: Mapping[str, Any], loyalty: Loyalty, tz: ZoneInfo
) -> tuple[list[Derived], dict[str, Any]]:
    """Fold a sale or refund in; returns derived events and what the event itself adds to its
    scope for triggers (`spend_today_before`, `points_delta`)."""
    p: Any = record.get("purchases") or _new_purchases()
    p = {**p, "days": dict(p["days"]), "months": dict(p["months"]), "receipts": dict(p["receipts"])}
    record["purchases"] = p
    if event.get("receipt_id"):
        p["settled"] = [
            *(p.get("settled") or ())[-(SETTLED_KEPT - 1) :],
            _settled_hash(event["type"], receipt_key(event)),
        ]
    ts, total = int(event["ts"]), float(event.get("total") or 0.0)
    today = local_date(ts, tz)
    day = today.isoformat()
    if p["spend_day"] != day:
        p["spend_day"], p["spend_today"] = day, 0.0
    event_view = {"spend_today_before": p["spend_today"]}
    if event["type"] == "purchase":
        _add(p["days"], day, 1, total)
        points = loyalty.points_for(total, record.get("tier"))
        p["receipts"][receipt_key(event)] = [day, total, points]
        p["first_ts"] = p["first_ts"] or ts
        p["last_ts"] = max(ts, p["last_ts"] or 0)
        items = event.get("items") or []
        p["categories"] = _recent(p["categories"], [i.get("category", "") for i in items])
        p["brands"] = _recent(p["brands"], [i.get("brand", "") for i in items])
        p["basket_items"] = sum(int(i.get("qty", 1)) for i in items)
        p["basket_total"] = total
        p["spend_today"] = round(p["spend_today"] + total, 2)
    else:  # refund: reverse the sale it names, in the bucket of that sale
        # refunds at the store of the sale; records from before the store was in the key too
        original_key = receipt_key(event, event.get("original_receipt_id") or "-")
        if original_key not in p["receipts"]:
            original_key = event.get("original_receipt_id") or ""
        original = p["receipts"].get(original_key)
        if original:
            o_day, o_total, o_points = original
            share = min(1.0, total / o_total) if o_total else 1.0
            bucket = p["days"] if o_day in p["days"] else p["months"]
            _add(
                bucket,
                o_day if bucket is p["days"] else o_day[:7],
                -1 if share >= 1.0 else 0,
                -min(total, o_total),
            )
            points = -int(o_points * share)
            if share >= 1.0:
                del p["receipts"][original_key]
            if o_day == day:
                p["spend_today"] = round(p["spend_today"] - min(total, o_total), 2)
        else:
            _add(p["days"], day, 0, -total)
            points = -loyalty.points_for(total, record.get("tier"))
    if len(p["receipts"]) > RECEIPTS_KEPT:
        for rid in list(p["receipts"])[: len(p["receipts"]) - RECEIPTS_KEPT]:
            del p["receipts"][rid]
    _compact(p, today)
    record["points"] = int(record.get("points", 0)) + points
    record["growth"] = rfm(record, ts, tz)["m365"]
    record["growth_day"] = ts // 86_400_000
    event_view["points_delta"] = points
    return retier(record, loyalty, ts, event, event["type"]), event_view


def refresh_growth(record: MemberRecord, loyalty: Loyalty, ts: int, tz: ZoneInfo) -> list[Derived]:
    """Growth value is spend over the last 365 days, so it falls as old sales leave the window,
    whether or not the member buys again: recomputed at the member's first event of each day
    (timers included), the tier following it down (`tier_changed`, reason `rolling_window`).
    Old day buckets are rolled into months meanwhile, so the record stays small."""
    p: Any = record.get("purchases")
    day = ts // 86_400_000
    if not p or record.get("growth_day") == day:
        return []
    record["growth_day"] = day
    p = {**p, "days": dict(p["days"]), "months": dict(p["months"])}
    _compact(p, local_date(ts, tz))
    record["purchases"] = p
    growth = rfm(record, ts, tz)["m365"]
    if growth == record.get("growth"):
        return []
    record["growth"] = growth
    event = {"event_id": f"window:{day}", "store_id": None}
    return retier(record, loyalty, ts, event, "rolling_window")


def retier(
    record: MemberRecord, loyalty: Loyalty, ts: int, event: Mapping[str, Any], reason: str
) -> list[Derived]:
    """Tier follows growth value, never below the tier CRM granted. `reason`: what moved it
    (purchase, refund, rolling_window, profile)."""
    earned = loyalty.tier_for(record["growth"])
    floor = record.get("crm_tier")
    new = floor if floor and loyalty.rank(floor) > loyalty.rank(earned) else earned
    old = tier_of(record, loyalty)
    record["tier"] = new
    return tier_changed(record, loyalty, old, ts, event, reason)


def tier_of(record: Mapping[str, Any], loyalty: Loyalty) -> str:
    return record.get("tier") or loyalty.tiers[0].name  # everyone starts on the first rung


def tier_changed(
    record: Mapping[str, Any],
    loyalty: Loyalty,
    old: str,
    ts: int,
    event: Mapping[str, Any],
    reason: str,
) -> list[Derived]:
    """The `tier_changed` event of a move from `old` to the record's tier (none if the same)."""
    new = tier_of(record, loyalty)
    if new == old:
        return []
    direction = "up" if loyalty.rank(new) > loyalty.rank(old) else "down"
    return [
        {
            "event_id": f"{record['member_id']}:tier:{event['event_id']}",
            "member_id": record["member_id"],
            "type": "tier_changed",
            "ts": ts,
            "store_id": event.get("store_id"),
            "derived": True,
            "from_tier": old,
            "to_tier": new,
            "direction": direction,
            "reason": reason,
        }
    ]


def rfm(record: Mapping[str, Any], now_ms: int, tz: ZoneInfo) -> dict[str, Any]:
    """Recency (days), frequency and monetary value over 30/90/365 days, as of `now_ms`."""
    p = record.get("purchases")
    out: dict[str, Any] = {
        "recency_days": None,
        "f30": 0,
        "m30": 0.0,
        "f90": 0,
        "m90": 0.0,
        "f365": 0,
        "m365": 0.0,
    }
    if not p:
        return out
    today = local_date(now_ms, tz)
    if p["last_ts"]:
        out["recency_days"] = max(0, (today - local_date(p["last_ts"], tz)).days)
    # One pass over the day buckets for the three windows (it was six); each window still adds
    # its buckets in the same order, so the figures are the same to the last bit.
    s30, s90, s365 = ((today - timedelta(days=w - 1)).isoformat() for w in (30, 90, 365))
    n30 = n90 = n365 = 0
    m30 = m90 = m365 = 0.0
    for d, v in p["days"].items():
        if d >= s365:
            n365 += v[0]
            m365 += v[1]
            if d >= s90:
                n90 += v[0]
                m90 += v[1]
                if d >= s30:
                    n30 += v[0]
                    m30 += v[1]
    month = s365[:7]
    n365 += sum(v[0] for mo, v in p["months"].items() if mo >= month)
    m365 += sum(v[1] for mo, v in p["months"].items() if mo >= month)
    out.update(
        f30=int(n30),
        m30=round(m30, 2),
        f90=int(n90),
        m90=round(m90, 2),
        f365=int(n365),
        m365=round(m365, 2),
    )
    return out
