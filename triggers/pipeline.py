"""One member event, start to finish, as a pure function: recognise a replay, fold the event into
the record, evaluate the triggers on it and on what it derives, apply what they decide, remember
the event, and say when time alone next changes the member.

The member agent (read -> step -> write -> send), `POST /explain` and the tests' `Story` all call
`step`, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.now import Now
from state.member_state import (
    RETURNED,
    StateContext,
    apply_event,
    apply_member_actions,
    count_sends,
    give_back,
    hold,
    member_next_due,
    member_scope,
    merge_anonymous,
    prune,
    record_fires,
    release_held,
    remember_decisions,
    remember_event,
    replayed_actions,
    set_patterns,
)
from state.presence import advance
from state.purchases import counted_before, refresh_growth, rfm, tier_changed, tier_of
from state.records import MemberRecord, as_record
from triggers.actions import INTERNAL
from triggers.attribution import (
    REDEEMED,
    convert,
    handovers,
    redeem,
    redeemed_elsewhere,
    remember_coupons,
)
from triggers.engine import HELD, Decision, Outcome, TriggerSet, evaluate, evaluate_due

Event = Mapping[str, Any]


@dataclass
class StepResult:
    record: MemberRecord
    derived: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[tuple[Event, Decision]] = field(default_factory=list)
    # When time alone next changes the member (visit end, dwell, a pending pattern), or None.
    next_due: int | None = None
    # A replay (the event was applied already, e.g. re-read after a crash): the record is as it
    # was, and these are the actions its first application produced, to be sent again (the
    # dispatcher's claim drops those already delivered).
    replayed: list[dict[str, Any]] | None = None
    # Messages held for quiet hours that are due now (triggers.engine.HELD), sent with this step.
    released: list[dict[str, Any]] = field(default_factory=list)
    # Redemptions and conversions this purchase made (triggers/attribution.py), for `conversions`.
    conversions: list[dict[str, Any]] = field(default_factory=list)
    # A sale or refund of a receipt the member had counted (state.purchases.counted_before):
    # nothing changes and nothing is sent, like a replay.
    same_receipt: bool = False
    # Events for other members' partitions: their coupons, redeemed by this member's sale.
    handovers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def actions(self) -> list[dict[str, Any]]:
        if self.replayed is not None:
            return self.replayed
        now = [
            a
            for _, d in self.decisions
            if d.verdict == "fired"
            for a in d.actions
            if not (d.reason == HELD and "not_before" in a["payload"])
        ]
        return [*self.released, *now] if self.released else now


def step(
    record: Mapping[str, Any] | None,
    event: Event,
    triggers: TriggerSet,
    ctx: StateContext,
    now: int,
    explain: bool = False,
    batch: int = 0,
) -> StepResult:
    """`event` is a canonical member event (type `timer` advances the clock to its `ts`); a
    replayed event changes nothing and returns the actions it produced the first time.

    `explain`: decide every candidate trigger, also those the worker skips because the member
    certainly fails them (see `evaluate`); the record and the actions are the same.
    `batch`: how many events of this member the current batch applied before this one (all of a
    batch's ids are remembered, so its replay is a no-op: state.member_state.remember_event)."""
    timer = event["type"] == "timer"  # a clock tick: applying it twice is harmless
    if event["type"] == RETURNED:  # a send dropped after it fired gives its slot back
        if record is None or replayed_actions(record, event["event_id"]) is not None:
            return StepResult(as_record(record or {}), replayed=[])
        state = as_record(record)
        give_back(state, event, ctx)
        remember_event(state, event["event_id"], [], batch)
        return StepResult(state, next_due=member_next_due(state, ctx))
    if not timer and record is not None:
        again = replayed_actions(record, event["event_id"])
        if again is None and event["type"] in ("purchase", "refund"):
            if counted_before(record, event):  # the same receipt under another event, or late
                return StepResult(
                    as_record(record),
                    next_due=member_next_due(record, ctx),
                    replayed=[],
                    same_receipt=True,
                )
        if again is not None:
            return StepResult(
                as_record(record), next_due=member_next_due(record, ctx), replayed=again
            )
    state, derived, extra = apply_event(record, event, ctx)
    if event.get("history"):  # a past record (storepulse import): state only, nothing fires
        advance(state, now, ctx.stores)  # a visit of the past is over; its events are not news
        presence = state.get("presence")
        refresh_growth(state, ctx.loyalty, now, ctx.store(presence and presence["store"]).tz)
        remember_event(state, event["event_id"], [], batch)
        return StepResult(state, next_due=member_next_due(state, ctx))
    result = StepResult(state, derived, released=release_held(state, now))
    if event["type"] == "purchase":  # the closed loop: codes redeemed, goals converted
        result.conversions = redeem(state, event) + convert(state, event, triggers.goals)
        result.handovers = handovers(event, state["member_id"])
    elif event["type"] == REDEEMED:  # a code of this member's, redeemed by someone else
        result.conversions = redeemed_elsewhere(state, event)
    memo: dict[Any, Any] = {}
    if timer:
        _decide(result, event, triggers, ctx, now, memo, due=True)
    else:
        _decide(result, {**event, **extra}, triggers, ctx, now, memo, explain=explain)
    for d in derived:
        _decide(result, d, triggers, ctx, now, memo, explain=explain)
    if not timer:
        remember_event(state, event["event_id"], result.actions, batch)
    prune(state, triggers.memory_ms, now)
    result.next_due = member_next_due(state, ctx)
    return result


def merge(
    record: Mapping[str, Any],
    anon_id: str,
    anon: Mapping[str, Any],
    triggers: TriggerSet,
    ctx: StateContext,
    now: int,
) -> StepResult | None:
    """An anonymous visitor's history folded into the member (`merge_anonymous`); None if it
    was merged before (a replay). A tier the merged spend lifts is a `tier_changed` like any
    other, decided by the triggers: a "welcome to gold" fires for a member whose earlier
    anonymous sales make them gold."""
    state = as_record({**record})
    old = tier_of(state, ctx.loyalty)
    if not merge_anonymous(state, anon_id, anon, ctx):
        return None
    presence = state.get("presence")
    event = {"event_id": f"merge:{anon_id}", "store_id": presence and presence["store"]}
    derived = tier_changed(state, ctx.loyalty, old, now, event, "merge")
    result = StepResult(state, derived)
    memo: dict[Any, Any] = {}
    for d in derived:
        _decide(result, d, triggers, ctx, now, memo)
    result.next_due = member_next_due(state, ctx)
    return result


def _decide(
    result: StepResult,
    ev: Event,
    triggers: TriggerSet,
    ctx: StateContext,
    now: int,
    memo: dict[Any, Any],
    due: bool = False,
    explain: bool = False,
) -> None:
    """`memo`: what stays the same for every decision of one step, per store time zone: the
    local time, and the RFM figures (purchases are folded before the first decision; actions
    change points and tags, never purchases). Each was computed for every decided event."""
    if not due and not triggers.watches(ev["type"]):
        return
    record = result.record
    presence = record.get("presence")
    store = ctx.store(ev.get("store_id") or (presence["store"] if presence else None))
    tz = store.tz
    clock = memo.get(tz)
    if clock is None:
        clock = memo[tz] = Now.of(now, tz)
    figures = memo.get((tz, "rfm"))
    if figures is None:
        figures = memo[(tz, "rfm")] = rfm(record, now, tz)
    scope = member_scope(record, clock, ctx.loyalty, figures)
    outcome = (
        evaluate_due(triggers, scope, store.scope(), clock)
        if due
        else evaluate(triggers, ev, scope, store.scope(), clock, explain)
    )
    _apply(record, outcome, clock)
    for d in outcome.fired:
        remember_coupons(record, d.actions, ctx.coupon_code, ev.get("store_id"))
    remember_decisions(
        record, ((d.trigger_id, d.verdict, d.reason, ev["type"]) for d in outcome.decisions), now
    )
    result.decisions += [(ev, d) for d in outcome.decisions]


def _apply(record: MemberRecord, outcome: Outcome, now: Now) -> None:
    set_patterns(record, outcome.arm, outcome.disarm)
    acted = [d.trigger_id for d in outcome.decisions if d.verdict in ("fired", "held_out")]
    record_fires(record, acted, now.ms)  # held-out members get the same cooldowns as treated ones
    for d in outcome.fired:
        count_sends(
            record,
            {a["channel"] for a in d.actions} - {INTERNAL, "staff", "log"},
            now.day,
            now.week,
        )
        apply_member_actions(record, d.actions)
        if d.reason == HELD:
            hold(record, [a for a in d.actions if "not_before" in a["payload"]])
