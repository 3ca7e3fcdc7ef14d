"""The report per trigger (and per store and day): the funnel from decisions to conversions, and
the uplift of treated over held-out (control) members with a 95 % confidence interval.

Built from what Kafka holds, so it survives any restart: `decisions` (fired and held out),
`deliveries` (sent, failed, suppressed at dispatch) and `conversions` (redemptions and goal
conversions, written by the member agent). Conversion rates are per distinct member: members
converted / members fired (treated) or held out (control). The interval of the difference of the
two rates is Newcombe's hybrid score interval (Newcombe 1998, method 10: from the two Wilson score
intervals), which keeps its coverage with small groups and rates near 0 where the Wald interval
does not; `significant` when it excludes 0.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Z95 = 1.959964


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float, float]:
    """(p1 - p2, lower, upper) at 95 %."""
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    l1, u1 = wilson(x1, n1)
    l2, u2 = wilson(x2, n2)
    d = p1 - p2
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, UTC).date().isoformat()


@dataclass
class Funnel:
    fired: int = 0
    held_out: int = 0
    treated: set[str] = field(default_factory=set)
    control: set[str] = field(default_factory=set)
    delivered: int = 0
    failed: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    redeemed: int = 0
    coupon_cost: float = 0.0
    converted_treated: set[str] = field(default_factory=set)
    converted_control: set[str] = field(default_factory=set)
    revenue: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        n_t, n_c = len(self.treated), len(self.control)
        x_t = len(self.converted_treated & self.treated) if self.treated else 0
        x_c = len(self.converted_control & self.control) if self.control else 0
        out: dict[str, Any] = {
            "candidates": self.fired + self.held_out,
            "fired": self.fired,
            "held_out": self.held_out,
            "delivered": self.delivered,
            "failed": self.failed,
            "suppressed_at_dispatch": dict(self.suppressed),
            "redeemed": self.redeemed,
            "converted": x_t,
            "converted_control": x_c,
            "revenue": round(self.revenue, 2),
            "coupon_cost": round(self.coupon_cost, 2),
            "treated_members": n_t,
            "control_members": n_c,
            "conversion_rate": round(x_t / n_t, 4) if n_t else None,
            "conversion_rate_control": round(x_c / n_c, 4) if n_c else None,
        }
        if n_t and n_c:
            d, lo, hi = newcombe(x_t, n_t, x_c, n_c)
            out["uplift"] = {
                "difference": round(d, 4),
                "ci95": [round(lo, 4), round(hi, 4)],
                "method": "Newcombe hybrid score (Wilson), 95 %",
                "significant": lo > 0 or hi < 0,
            }
        else:
            out["uplift"] = None  # no control group (holdout 0) or nobody fired
        return out


@dataclass
class Report:
    since: int | None = None
    until: int | None = None
    funnels: dict[str, Funnel] = field(default_factory=dict)
    by_day: dict[tuple[str, str], Funnel] = field(default_factory=dict)
    by_store: dict[tuple[str, str], Funnel] = field(default_factory=dict)
    redemption_issues: Counter[str] = field(default_factory=Counter)  # outcome -> count
    actions: dict[str, tuple[str, str]] = field(default_factory=dict)  # action id -> trigger, day

    def _in(self, ts: int) -> bool:
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)

    def _all(self, trigger: str, ts: int, store: str | None) -> list[Funnel]:
        return [
            self.funnels.setdefault(trigger, Funnel()),
            self.by_day.setdefault((trigger, _day(ts)), Funnel()),
            self.by_store.setdefault((trigger, store or "-"), Funnel()),
        ]

    def decision(self, d: dict[str, Any], store: str | None = None) -> None:
        ts = int(d.get("ts") or 0)
        if not self._in(ts):
            return
        for f in self._all(d["trigger_id"], ts, store):
            if d["verdict"] == "fired":
                f.fired += 1
                f.treated.add(d["member_id"])
            elif d["verdict"] == "held_out":
                f.held_out += 1
                f.control.add(d["member_id"])

    def delivery(self, d: dict[str, Any]) -> None:
        ts = int(d.get("fired_at") or 0)
        if not self._in(ts):
            return
        for f in self._all(d["trigger_id"], ts, None)[:2]:
            if d["outcome"] == "sent":
                f.delivered += 1
            elif d["outcome"] == "failed":
                f.failed += 1
            elif d.get("reason") != "duplicate":
                f.suppressed[str(d.get("reason", "")).split(" ")[0]] += 1

    def conversion(self, c: dict[str, Any]) -> None:
        ts = int(c.get("ts") or 0)
        if not self._in(ts):
            return
        if c["kind"] == "redemption":
            if c["outcome"] != "attributed":
                self.redemption_issues[c["outcome"]] += 1
                return
            for f in self._all(c["trigger_id"], ts, c.get("store_id")):
                f.redeemed += 1
                f.coupon_cost += float(c.get("value") or 0)
            return
        for f in self._all(c["trigger_id"], ts, c.get("store_id")):
            if c["group"] == "control":
                f.converted_control.add(c["member_id"])
            else:
                f.converted_treated.add(c["member_id"])
                f.revenue += float(c.get("amount") or 0)

    def as_dict(self, trigger: str | None = None) -> dict[str, Any]:
        def pick(table: dict[tuple[str, str], Funnel], tid: str) -> dict[str, Any]:
            return {k[1]: f.as_dict() for k, f in sorted(table.items()) if k[0] == tid}

        wanted = [trigger] if trigger else sorted(self.funnels)
        return {
            "from": self.since,
            "to": self.until,
            "triggers": {
                tid: {
                    **(self.funnels.get(tid) or Funnel()).as_dict(),
                    "by_day": pick(self.by_day, tid),
                    "by_store": pick(self.by_store, tid),
                }
                for tid in wanted
            },
            "redemptions_not_attributed": dict(self.redemption_issues),
            "notes": (
                "per distinct member; conversions are purchases within each trigger's goal "
                "window after its last fire (treated) or hold-out (control); per-store rows use "
                "the store of the event"
            ),
        }
