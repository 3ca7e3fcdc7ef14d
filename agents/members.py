"""Member agent: folds each canonical event into member state, evaluates triggers on it and on the
events it derives (visits, zones, dwell, tiers), emits actions, and keeps the timer schedule.

It also carries anonymous histories over to members: an `identified` event arrives on the
anonymous visitor's partition, which hands the record to the member's partition as a `merge`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import faust

from app import app, settings
from metrics import ACTIONS_OUT, DERIVED_EVENTS, MEMBER_EVENTS, MERGES, TRIGGER_DECISIONS
from state.loyalty import load_loyalty
from state.member_state import (
    StateContext,
    apply_event,
    member_scope,
    merge_anonymous,
    new_member,
    record_fires,
)
from state.members import member_state_table, member_timers_table
from state.presence import next_due
from state.stores import load_stores
from state.timers import clock, schedule
from topics import Action, MemberEvent, actions_topic, derived_events_topic, member_events_topic
from triggers.engine import TriggerSet, evaluate
from triggers.registry import active_triggers

logger = logging.getLogger("storepulse.members")


def event_scope(event: MemberEvent) -> dict[str, Any]:
    """What conditions see as `event`: the canonical fields plus the source's own attributes."""
    return {
        **event.attrs,
        "event_id": event.event_id,
        "member_id": event.member_id,
        "type": event.type,
        "ts": event.ts,
        "store_id": event.store_id,
    }


def keeps_state(event: MemberEvent) -> bool:
    """Guests and rotating random MACs are counted, but have no member to remember."""
    return not (
        event.member_id.startswith("guest-") or event.attrs.get("identified_by") == "mac_random"
    )


def schedule_next(
    member_id: str, record: Mapping[str, Any] | None, ctx: StateContext, force: bool = False
) -> None:
    """Persist the next due time only when it moves earlier (or after a tick): the stored time is
    never later than the real one, so nothing is missed, and most events write nothing."""
    due = next_due(record, ctx.stores) if record else None
    stored = member_timers_table.get(member_id)
    if due is None:
        if stored is not None:
            del member_timers_table[member_id]
        schedule.set(member_id, None)
    elif force or stored is None or due < stored["due"]:
        member_timers_table[member_id] = {"due": due}
        schedule.set(member_id, due)


async def hand_over_anonymous(event: MemberEvent, ctx: StateContext) -> None:
    """On the anonymous id's partition: send its history to the member, then forget it."""
    anon_id, member_id = event.member_id, event.attrs["member_id"]
    record = member_state_table.get(anon_id)
    if record is None:
        return  # never seen, or already handed over (a replay)
    await member_events_topic.send(
        key=member_id,
        value=MemberEvent(
            event_id=f"merge:{anon_id}",
            member_id=member_id,
            type="merge",
            ts=event.ts,
            source="identity",
            attrs={"anonymous_id": anon_id, "record": record},
        ),
    )
    del member_state_table[anon_id]
    schedule_next(anon_id, None, ctx)


def take_over_anonymous(event: MemberEvent, ctx: StateContext) -> None:
    record = dict(member_state_table.get(event.member_id) or new_member(event.member_id))
    if merge_anonymous(record, event.attrs["anonymous_id"], event.attrs["record"]):
        MERGES.inc()
        member_state_table[event.member_id] = record
        schedule_next(event.member_id, record, ctx)


class MemberProcessor:
    """Evaluates one member event end to end; the agent only feeds it."""

    def __init__(self, triggers: TriggerSet, ctx: StateContext) -> None:
        self.triggers = triggers
        self.ctx = ctx

    async def process(self, event: MemberEvent) -> None:
        MEMBER_EVENTS.labels(event.type).inc()
        if event.type == "identified":
            await hand_over_anonymous(event, self.ctx)
            return
        if event.type == "merge":
            take_over_anonymous(event, self.ctx)
            return
        if not keeps_state(event):
            return
        before = member_state_table.get(event.member_id)
        if event.type == "timer" and before is None:
            schedule_next(event.member_id, None, self.ctx)
            return
        now = int(time.time() * 1000)
        if event.type != "timer":
            clock.observe(event.ts, now)
        raw = event_scope(event)
        record, derived, extra = apply_event(before, raw, self.ctx)
        candidates = ([] if event.type == "timer" else [{**raw, **extra}]) + derived
        for ev in candidates:
            await self.evaluate(record, ev, now)
        member_state_table[event.member_id] = record
        schedule_next(event.member_id, record, self.ctx, force=event.type == "timer")
        for d in derived:
            DERIVED_EVENTS.labels(d["type"]).inc()
            attrs = {
                k: v
                for k, v in d.items()
                if k not in ("event_id", "member_id", "type", "ts", "store_id")
            }
            await derived_events_topic.send(
                key=event.member_id,
                value=MemberEvent(
                    event_id=d["event_id"],
                    member_id=d["member_id"],
                    type=d["type"],
                    ts=d["ts"],
                    store_id=d.get("store_id"),
                    source="derived",
                    attrs=attrs,
                ),
            )

    async def evaluate(self, record: dict[str, Any], ev: Mapping[str, Any], now: int) -> None:
        if not self.triggers.candidates(ev["type"]):
            return
        store = self.ctx.store(ev.get("store_id"))
        scope = member_scope(record, now, store.tz, self.ctx.loyalty)
        decisions = evaluate(self.triggers, ev, scope, store.scope(), now, store.tz)
        fired = [d for d in decisions if d.verdict == "fired"]
        record_fires(record, (d.trigger_id for d in fired), now)
        for d in decisions:
            TRIGGER_DECISIONS.labels(d.trigger_id, d.verdict, d.reason).inc()
        for d in fired:
            for action in d.actions:
                await actions_topic.send(key=record["member_id"], value=Action(**action))
                ACTIONS_OUT.labels(d.trigger_id, action["channel"]).inc()


def state_context() -> StateContext:
    return StateContext(load_stores(settings.stores_path), load_loyalty(settings.loyalty_path))


@app.agent(member_events_topic, name="storepulse.members.evaluate")
async def evaluate_member_events(stream: faust.StreamT[MemberEvent]) -> None:
    processor = MemberProcessor(active_triggers(), state_context())
    async for event in stream:
        await processor.process(event)
