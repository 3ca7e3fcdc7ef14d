"""A member's story told event by event through `triggers.pipeline.step` (what the worker runs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from state.loyalty import Loyalty
from state.member_state import StateContext, new_member
from state.stores import Store
from triggers.engine import TriggerSet
from triggers.pipeline import StepResult, step


def member(member_id: str = "m1", **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = dict(new_member(member_id))
    record.update(first_name="Li", consent={"push": True, "sms": True, "wechat": True}, **fields)
    return record


class Story:
    def __init__(
        self,
        triggers: TriggerSet,
        stores: Mapping[str, Store],
        loyalty: Loyalty | None = None,
        record: dict[str, Any] | None = None,
        store_id: str = "s1",
    ) -> None:
        self.triggers = triggers
        self.ctx = StateContext(stores, loyalty or Loyalty(), triggers.dwell_thresholds_ms())
        self.record = record if record is not None else member()
        self.store_id = store_id
        self.n = 0
        self.explain = True  # every candidate's verdict, as /explain shows them

    def event(self, type_: str, ts: int, now: int | None = None, **attrs: Any) -> StepResult:
        self.n += 1
        ev = {
            "event_id": f"e{self.n}",
            "member_id": self.record["member_id"],
            "type": type_,
            "ts": ts,
            "store_id": attrs.pop("store_id", self.store_id),
            **attrs,
        }
        self.last = (ev, now if now is not None else ts)
        return self._step(ev, self.last[1])

    def again(self) -> StepResult:
        """The last event once more, as a crash's replay delivers it."""
        return self._step(*self.last)

    def _step(self, ev: dict[str, Any], now: int) -> StepResult:
        result = step(self.record, ev, self.triggers, self.ctx, now, explain=self.explain)
        self.record = dict(result.record)
        return result

    def timer(self, now: int) -> StepResult:
        return self.event("timer", now, now)

    @staticmethod
    def verdicts(result: StepResult) -> list[tuple[str, str, str]]:
        return [(d.trigger_id, d.verdict, d.reason) for _, d in result.decisions]

    @staticmethod
    def fired(result: StepResult) -> list[str]:
        return [a["trigger_id"] for a in result.actions]
