"""Member agent: folds each canonical event into member state, evaluates triggers, emits actions.

It also carries anonymous histories over to members: an `identified` event arrives on the
anonymous visitor's partition, which hands the record to the member's partition as a `merge`.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from zoneinfo import ZoneInfo

import faust

from app import app, settings
from metrics import ACTIONS_OUT, MEMBER_EVENTS, MERGES, TRIGGER_DECISIONS
from state.member_state import apply_event, merge_anonymous, new_member, record_fires
from state.members import member_state_table
from state.stores import load_stores
from topics import Action, MemberEvent, actions_topic, member_events_topic
from triggers.engine import evaluate
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


async def hand_over_anonymous(event: MemberEvent) -> None:
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


def take_over_anonymous(event: MemberEvent) -> None:
    record = dict(member_state_table.get(event.member_id) or new_member(event.member_id))
    if merge_anonymous(record, event.attrs["anonymous_id"], event.attrs["record"]):
        MERGES.inc()
        member_state_table[event.member_id] = record


@app.agent(member_events_topic, name="storepulse.members.evaluate")
async def evaluate_member_events(stream: faust.StreamT[MemberEvent]) -> None:
    triggers = active_triggers()
    stores = load_stores(settings.stores_path)
    default_tz = ZoneInfo(settings.timezone)
    async for event in stream:
        MEMBER_EVENTS.labels(event.type).inc()
        if event.type == "identified":
            await hand_over_anonymous(event)
            continue
        if event.type == "merge":
            take_over_anonymous(event)
            continue
        if event.member_id.startswith("guest-"):
            continue  # a sale without a member: counted, no member state to keep
        store = stores.get(event.store_id or "")
        tz = store.tz if store else default_tz
        scope_event = event_scope(event)
        record = apply_event(member_state_table.get(event.member_id), scope_event, tz)
        now = int(time.time() * 1000)
        decisions = evaluate(triggers, scope_event, record, store.scope() if store else {}, now, tz)
        fired = [d for d in decisions if d.verdict == "fired"]
        record_fires(record, (d.trigger_id for d in fired), now)
        member_state_table[event.member_id] = record
        for d in decisions:
            TRIGGER_DECISIONS.labels(d.trigger_id, d.verdict, d.reason).inc()
        for d in fired:
            for action in d.actions:
                await actions_topic.send(key=event.member_id, value=Action(**action))
                ACTIONS_OUT.labels(d.trigger_id, action["channel"]).inc()
