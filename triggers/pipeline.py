"""One member event, start to finish, as a pure function: fold it into the record, evaluate the
triggers on it and on what it derives, and apply what they decide to the record.

The member agent, `POST /explain` and the backtest all call `step`, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from state.member_state import (
    MemberRecord,
    StateContext,
    apply_event,
    apply_member_actions,
    count_sends,
    member_scope,
    record_fires,
    set_patterns,
)
from triggers.actions import INTERNAL
from triggers.engine import Decision, Outcome, TriggerSet, evaluate, evaluate_due, week_of

Event = Mapping[str, Any]


@dataclass
class StepResult:
    record: MemberRecord
    derived: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[tuple[Event, Decision]] = field(default_factory=list)

    @property
    def actions(self) -> list[dict[str, Any]]:
        return [a for _, d in self.decisions if d.verdict == "fired" for a in d.actions]


def step(
    record: Mapping[str, Any] | None,
    event: Event,
    triggers: TriggerSet,
    ctx: StateContext,
    now: int,
    explain: bool = False,
) -> StepResult:
    """`event` is a canonical member event (type `timer` advances the clock to its `ts`).

    `explain`: decide every candidate trigger, also those the worker skips because the member
    certainly fails them (see `evaluate`); the record and the actions are the same."""
    state, derived, extra = apply_event(record, event, ctx)
    result = StepResult(state, derived)
    if event["type"] == "timer":
        _decide(result, event, triggers, ctx, now, due=True)
    else:
        _decide(result, {**event, **extra}, triggers, ctx, now, explain=explain)
    for d in derived:
        _decide(result, d, triggers, ctx, now, explain=explain)
    return result


def _decide(
    result: StepResult,
    ev: Event,
    triggers: TriggerSet,
    ctx: StateContext,
    now: int,
    due: bool = False,
    explain: bool = False,
) -> None:
    if not due and not triggers.watches(ev["type"]):
        return
    record = result.record
    store = ctx.store(ev.get("store_id") or (record.get("presence") or {}).get("store"))
    scope = member_scope(record, now, store.tz, ctx.loyalty)
    outcome = (
        evaluate_due(triggers, scope, store.scope(), now, store.tz)
        if due
        else evaluate(triggers, ev, scope, store.scope(), now, store.tz, explain)
    )
    _apply(record, outcome, now, store.tz)
    result.decisions += [(ev, d) for d in outcome.decisions]


def _apply(record: MemberRecord, outcome: Outcome, now: int, tz: Any) -> None:
    set_patterns(record, outcome.arm, outcome.disarm)
    acted = [d.trigger_id for d in outcome.decisions if d.verdict in ("fired", "held_out")]
    record_fires(record, acted, now)  # held-out members get the same cooldowns as treated ones
    day, week = week_of(now, tz)
    for d in outcome.fired:
        count_sends(
            record, {a["channel"] for a in d.actions} - {INTERNAL, "staff", "log"}, day, week
        )
        apply_member_actions(record, d.actions)
