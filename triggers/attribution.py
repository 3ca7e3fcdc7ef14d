"""The closed loop in member state: coupon codes the member was sent, redeemed at a till, and
purchases that convert a trigger's goal, for treated and held-out (control) members alike.

Codes are deterministic per (pool, action id) (state.coupons.code_for), so the member agent
knows the code of a coupon it fires; the member keeps the last COUPONS_KEPT. A sale naming a
code (`coupons` on the POS event) is attributed to the action, trigger, store and channel that
issued it, once; a code the member was never sent, one redeemed before, or one past its expiry is
reported with that outcome and not attributed. A purchase within a trigger's goal window after
its last fire (treated) or hold-out (control) converts it once per fire.
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
    `expired` (counted, not attributed)."""
    codes = event.get("coupons") or []
    if not codes:
        return []
    coupons = dict(state.get("coupons") or {})
    ts, out = int(event["ts"]), []
    for code in codes:
        base = {
            "kind": "redemption",
            "code": code,
            "member_id": event["member_id"],
            "event_id": event["event_id"],
            "store_id": event.get("store_id"),
            "ts": ts,
            "amount": float(event.get("total") or 0),
        }
        entry = coupons.get(code)
        if entry is None:
            out.append({**base, "outcome": "unknown_code"})
            continue
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
            out.append({**found, "outcome": "already_redeemed"})
        elif ts > int(expires_at):
            out.append({**found, "outcome": "expired"})
        else:
            coupons[code] = [*entry[:7], ts]
            out.append({**found, "outcome": "attributed"})
    state["coupons"] = coupons
    return out


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
