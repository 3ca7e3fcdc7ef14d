"""What a trigger would have done: recorded member events replayed through the same pure `step`.

Events are taken from `member-events` in the order each partition recorded them (timer ticks
included: they are events there too), each decided at the time the live worker received it (the
record's timestamp), on member records built from nothing at the start of the window. Nothing is
written anywhere: the report is the only output.

What a backtest cannot know, and says in its report: member state from before the window (visits,
purchases, cooldowns, caps and consent recorded earlier start empty, unless the window reaches
back to them), events the retention of `member-events` has dropped, and what a delivery would
have returned (a budget spent by other triggers, a gateway that failed).

An anonymous visitor identified as a member is merged from the `merge` event the live worker
wrote on the member's partition (the visitor's record as the live worker had it), so every
member's events are on one partition and partitions can be folded apart and added up
(triggers/replay.py); the visitor's own fires never carried over, live or here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from state.member_state import StateContext, new_member
from state.records import MemberRecord, as_record
from triggers.engine import TriggerSet
from triggers.pipeline import StepResult, merge, step

CANNOT_KNOW = (
    "member state from before the window starts empty (visits, purchases, cooldowns, caps, "
    "consent and tier recorded earlier); events older than member-events' retention are gone; "
    "deliveries are not simulated (a gateway failing, a pool spent by triggers not in this run)"
)


@dataclass
class TriggerReport:
    fires: int = 0
    members: set[str] = field(default_factory=set)
    held_out: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    channels: Counter[str] = field(default_factory=Counter)
    coupons: Counter[str] = field(default_factory=Counter)  # pool -> codes
    face_value: dict[str, float] = field(default_factory=dict)  # pool -> sum of values
    by_day: Counter[str] = field(default_factory=Counter)
    by_store: Counter[str] = field(default_factory=Counter)

    def as_dict(self, budgets: Mapping[str, int]) -> dict[str, Any]:
        pools = {
            pool: {
                "issued": n,
                "face_value": round(self.face_value.get(pool, 0.0), 2),
                "budget": budgets.get(pool),
                "over_budget": max(0, n - budgets[pool]) if pool in budgets else None,
            }
            for pool, n in sorted(self.coupons.items())
        }
        return {
            "fires": self.fires,
            "members": len(self.members),
            "held_out": self.held_out,
            "suppressed": dict(self.suppressed.most_common()),
            "errors": self.errors,
            "messages_by_channel": dict(self.channels.most_common()),
            "coupons": pools,
            "fires_by_day": dict(sorted(self.by_day.items())),
            "fires_by_store": dict(self.by_store.most_common()),
        }


@dataclass
class Summary:
    """What a backtest of some partitions found, to be added to another's (`Backtest.absorb`)."""

    events: int
    members: int
    first_ts: int | None
    last_ts: int | None
    reports: dict[str, TriggerReport]


@dataclass
class Backtest:
    triggers: TriggerSet
    ctx: StateContext
    budgets: Mapping[str, int] = field(default_factory=dict)
    records: dict[str, MemberRecord] = field(default_factory=dict)
    reports: dict[str, TriggerReport] = field(default_factory=dict)
    events: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    other_members: int = 0  # members of runs absorbed (their records stay there)

    def feed(self, event: Mapping[str, Any], now: int) -> None:
        """One recorded member event, decided at `now` (when the live worker received it)."""
        if not isinstance(event.get("type"), str) or not isinstance(event.get("event_id"), str):
            return  # not a member event: the live worker dead-letters it
        if not isinstance(event.get("ts"), int):
            return
        self.events += 1
        self.first_ts = now if self.first_ts is None else min(self.first_ts, now)
        self.last_ts = now if self.last_ts is None else max(self.last_ts, now)
        kind, member_id = event["type"], event["member_id"]
        if kind == "identified":  # the live worker handed this visitor's history over ...
            self.records.pop(member_id, None)
            return
        if kind == "merge":  # ... in this event, on the member's partition: merged as live
            attrs = event.get("attrs") or {}
            anon, anon_id = attrs.get("record"), attrs.get("anonymous_id")
            if isinstance(anon, dict) and isinstance(anon_id, str):
                record = self.records.get(member_id) or new_member(member_id)
                merged = merge(record, anon_id, anon, self.triggers, self.ctx, now)
                if merged is not None:  # a tier it lifts is decided, as live
                    self.records[member_id] = as_record(merged.record)
                    self._count(merged, member_id, now)
            return
        if kind == "erase":  # erased since: the backtest forgets the member too
            self.records.pop(member_id, None)
            return
        if kind == "action_returned":  # what the live run's deliveries returned
            return
        if member_id.startswith("guest-") or event.get("attrs", {}).get("identified_by") == (
            "mac_random"
        ):
            return
        if kind == "timer" and member_id not in self.records:
            return
        scoped = {
            **event.get("attrs", {}),
            "event_id": event["event_id"],
            "member_id": member_id,
            "type": kind,
            "ts": event["ts"],
            "store_id": event.get("store_id"),
        }
        result = step(self.records.get(member_id), scoped, self.triggers, self.ctx, now)
        if result.replayed is not None:
            return
        self.records[member_id] = as_record(result.record)
        self._count(result, member_id, now)

    def _count(self, result: StepResult, member_id: str, now: int) -> None:
        for ev, decision in result.decisions:
            report = self.reports.get(decision.trigger_id)
            if report is None:
                report = self.reports[decision.trigger_id] = TriggerReport()
            if decision.verdict == "fired":
                report.fires += 1
                report.members.add(member_id)
                store = ev.get("store_id") or "-"
                report.by_store[store] += 1
                tz = self.ctx.store(ev.get("store_id")).tz
                report.by_day[datetime.fromtimestamp(now / 1000, tz).date().isoformat()] += 1
                for action in decision.actions:
                    report.channels[action["channel"]] += 1
                    if action["kind"] == "coupon":
                        pool = action["payload"]["pool"]
                        report.coupons[pool] += 1
                        value = float(action["payload"].get("value") or 0)
                        report.face_value[pool] = report.face_value.get(pool, 0.0) + value
            elif decision.verdict == "held_out":
                report.held_out += 1
            elif decision.verdict == "suppressed":
                report.suppressed[decision.reason.split(" ")[0]] += 1
            elif decision.verdict == "error":
                report.errors += 1

    def summary(self) -> Summary:
        return Summary(
            self.events, len(self.records), self.first_ts, self.last_ts, dict(self.reports)
        )

    def absorb(self, other: Summary) -> None:
        """Add another run's findings: its members are others (partitions hold distinct members)."""
        self.events += other.events
        self.other_members += other.members
        for name in ("first_ts", "last_ts"):
            theirs = getattr(other, name)
            if theirs is not None:
                mine = getattr(self, name)
                pick = min if name == "first_ts" else max
                setattr(self, name, theirs if mine is None else pick(mine, theirs))
        for tid, theirs in other.reports.items():
            mine = self.reports.setdefault(tid, TriggerReport())
            mine.fires += theirs.fires
            mine.members |= theirs.members
            mine.held_out += theirs.held_out
            mine.suppressed.update(theirs.suppressed)
            mine.errors += theirs.errors
            mine.channels.update(theirs.channels)
            mine.coupons.update(theirs.coupons)
            for pool, value in theirs.face_value.items():
                mine.face_value[pool] = mine.face_value.get(pool, 0.0) + value
            mine.by_day.update(theirs.by_day)
            mine.by_store.update(theirs.by_store)

    def report(self, only: set[str] | None = None) -> dict[str, Any]:
        return {
            "window": {
                "from": self.first_ts,
                "to": self.last_ts,
                "events": self.events,
                "members": len(self.records) + self.other_members,
            },
            "cannot_know": CANNOT_KNOW,
            "triggers": {
                tid: r.as_dict(self.budgets)
                for tid, r in sorted(self.reports.items())
                if only is None or tid in only
            },
        }
