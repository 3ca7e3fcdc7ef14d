"""The closed loop in member state: coupon codes the member was sent, redeemed at a till, and
purchases that convert a trigger's goal, for treated and held-out (control) members alike.

Codes are deterministic per (pool, action id) (state.coupons.code_for), so the member agent
knows the code of a coupon it fires; the member keeps the last COUPONS_KEPT. A sale naming a
code (`coupons` on the POS event) is attributed to the action, trigger, store and channel that
issued it, once; a code issued to someone else (the edge names its owner) is handed to that
member's partition and attributed there, with who redeemed it; a code nobody was sent, one
redeemed before, or one past its expiry is reported with that outcome and not attributed. A
purchase within a trigger's goal window after its last fire (treated) or hold-out (control)
converts it once per fire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from state.records import MemberRecord
from triggers.engine import holdout

COUPONS_KEPT = 10  # ~110 bytes each
CodeOf = Callable[[str, str], str | None]  # (pool, action id) -> code, None: unknown pool


def remember_coupons(
    state: MemberRecord,
    actions: Iterable[Mapping[str, Any]],
    code_of: CodeOf | None,
    store_id: str | None,
) -> None:
    """Keep the codes of the coupon actions fired for this member: [trigger, action id, channel,
    store, fired at, expires at, value, redeemed at (0: not yet)]."""
    if code_of is None:
        return
    coupons = None
    for a in actions:
        if a["kind"] != "coupon":
            continue
        code = code_of(a["payload"]["pool"], a["action_id"])
        if code is None:
            continue
        coupons = coupons if coupons is not None else dict(state.get("coupons") or {})
        coupons[code] = [
            a["trigger_id"],
            a["action_id"],
            a["channel"],
            store_id,
            a["fired_at"],
            a["payload"]["expires_at"],
            a["payload"].get("value"),
            0,
        ]
    if coupons is not None:
        state["coupons"] = dict(list(coupons.items())[-COUPONS_KEPT:])


def redeem(state: MemberRecord, event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The redemptions a sale names: attributed, or `unknown_code` / `already_redeemed` /
    `expired` (counted, not attributed). Codes issued to another member (`coupon_owners`, looked
    up by the edge) are left to that member: `handovers` sends them there."""
    codes = event.get("coupons") or []
    if not codes:
        return []
    owners = event.get("coupon_owners") or {}
    coupons = dict(state.get("coupons") or {})
    out = []
    for code in codes:
        if code in owners:
            continue
        out.append(_redeem_one(coupons, code, event, str(event["member_id"]), None))
    state["coupons"] = coupons
    return out


def handovers(event: Mapping[str, Any], buyer: str) -> list[dict[str, Any]]:
    """`coupon_redeemed` events for the members who were sent the codes a sale by someone else
    (another member, a friend, a guest without a member id) redeemed: the redemption is the
    issuing trigger's, whoever brings the code to the till."""
    if not event.get("coupon_owners"):
        return []
    return [
        {
            "event_id": f"{event['event_id']}:redeemed:{code}",
            "member_id": owner,
            "type": REDEEMED,
            "ts": int(event["ts"]),
            "store_id": event.get("store_id"),
            "source": "pos",
            "attrs": {
                "code": code,
                "redeemed_by": buyer,
                "sale_event_id": event["event_id"],
                "total": float(event.get("total") or 0),
            },
        }
        for code, owner in sorted((event.get("coupon_owners") or {}).items())
        if code in (event.get("coupons") or ())
    ]


REDEEMED = "coupon_redeemed"


def redeemed_elsewhere(state: MemberRecord, event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """On the member the code was issued to: the redemption of it by `redeemed_by`."""
    coupons = dict(state.get("coupons") or {})
    sale = {
        "event_id": event["sale_event_id"],
        "ts": event["ts"],
        "store_id": event.get("store_id"),
        "total": event.get("total"),
    }
    found = _redeem_one(coupons, str(event["code"]), sale, str(event["member_id"]), event)
    state["coupons"] = coupons
    return [found]


def _redeem_one(
    coupons: dict[str, list[Any]],
    code: str,
    sale: Mapping[str, Any],
    member_id: str,
    elsewhere: Mapping[str, Any] | None,
) -> dict[str, Any]:
    ts = int(sale["ts"])
    base = {
        "kind": "redemption",
        "code": code,
        "member_id": member_id,
        "event_id": sale["event_id"],
        "store_id": sale.get("store_id"),
        "ts": ts,
        "amount": float(sale.get("total") or 0),
    }
    if elsewhere is not None:
        base["redeemed_by"] = elsewhere["redeemed_by"]
    entry = coupons.get(code)
    if entry is None:
        return {**base, "outcome": "unknown_code"}
    trigger_id, action_id, channel, _, fired_at, expires_at, value, redeemed = entry
    found = {
        **base,
        "trigger_id": trigger_id,
        "action_id": action_id,
        "channel": channel,
        "fired_at": fired_at,
        "value": value,
    }
    if redeemed:
        return {**found, "outcome": "already_redeemed"}
    if ts > int(expires_at):
        return {**found, "outcome": "expired"}
    coupons[code] = [*entry[:7], ts]
    return {**found, "outcome": "attributed"}


def convert(
    state: MemberRecord,
    event: Mapping[str, Any],
    goals: Mapping[str, tuple[int, float, str | None, float]],
) -> list[dict[str, Any]]:
    """The goals this purchase converts: once per fire of each trigger, treated or control."""
    if not goals:
        return []
    fired = state.get("fired") or {}
    ts, total = int(event["ts"]), float(event.get("total") or 0)
    categories = {i.get("category") for i in event.get("items") or () if isinstance(i, dict)}
    converted = None
    out = []
    for trigger_id, (within_ms, min_total, category, share) in goals.items():
        entry = fired.get(trigger_id)
        if not entry or not entry[0] or not 0 <= ts - int(entry[0]) <= within_ms:
            continue
        if total < min_total or (category and category not in categories):
            continue
        converted = converted if converted is not None else dict(state.get("converted") or {})
        if converted.get(trigger_id) == entry[0]:
            continue  # this fire converted already
        converted[trigger_id] = entry[0]
        group = "control" if holdout(state["member_id"], trigger_id, share) else "treated"
        out.append(
            {
                "kind": "conversion",
                "trigger_id": trigger_id,
                "group": group,
                "member_id": state["member_id"],
                "event_id": event["event_id"],
                "store_id": event.get("store_id"),
                "ts": ts,
                "fired_at": entry[0],
                "amount": total,
            }
        )
    if converted is not None:
        state["converted"] = converted
    return out
