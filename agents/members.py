"""Member agent: folds each canonical event into member state, evaluates triggers on it and on the
events it derives (visits, zones, dwell, tiers), emits actions, and keeps the timer schedule.

It also carries anonymous histories over to members: an `identified` event arrives on the
anonymous visitor's partition, which hands the record to the member's partition as a `merge`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import faust
from faust.exceptions import PartitionsMismatch

from agents.supervisor import supervised
from app import current
from core.metrics import (
    ACTIONS_OUT,
    DERIVED_EVENTS,
    MEMBER_EVENTS,
    MEMBER_REPLAYS,
    MERGES,
    TRIGGER_ERRORS,
    count_decision,
)
from edge.dead_letters import dead_letter
from state.loyalty import Loyalty, load_loyalty
from state.member_state import (
    StateContext,
    member_next_due,
    merge_anonymous,
    new_member,
)
from state.members import member_state_table, member_timers_table
from state.records import as_record
from state.stores import Store, load_stores
from state.timers import clock, schedule
from topics import (
    Action,
    DecisionRecord,
    MemberEvent,
    actions_topic,
    decisions_topic,
    derived_events_topic,
    member_events_topic,
)
from triggers.live import registry
from triggers.pipeline import StepResult, step
from triggers.registry import TriggerRegistry

app, settings = current()

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


def schedule_next(member_id: str, due: int | None, force: bool = False, partition: int = 0) -> None:
    """Persist the next due time only when it moves earlier (or after a tick): the stored time is
    never later than the real one, so nothing is missed, and most events write nothing."""
    stored = member_timers_table.get(member_id)
    if due is None:
        if stored is not None:
            del member_timers_table[member_id]
        schedule.set(member_id, None)
    elif force or stored is None or due < stored["due"]:
        member_timers_table[member_id] = {"due": due}
        schedule.set(member_id, due, partition)


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
    schedule_next(anon_id, None)


def take_over_anonymous(event: MemberEvent, ctx: StateContext, partition: int) -> None:
    stored = member_state_table.get(event.member_id)
    record = as_record(stored) if stored else new_member(event.member_id)
    if merge_anonymous(record, event.attrs["anonymous_id"], event.attrs["record"]):
        MERGES.inc()
        member_state_table[event.member_id] = record
        schedule_next(event.member_id, member_next_due(record, ctx), partition=partition)


class MemberProcessor:
    """Evaluates one member event end to end; the agent only feeds it."""

    def __init__(
        self, registry: TriggerRegistry, stores: Mapping[str, Store], loyalty: Loyalty
    ) -> None:
        self.registry = registry
        self.stores = stores
        self.loyalty = loyalty
        self._version = -1
        self.triggers = registry.current()
        self.ctx = StateContext(stores, loyalty)
        self.publish_derived = "derived-events" in settings.analytics
        self.publish_decisions = "decisions" in settings.analytics

    def refresh(self) -> None:
        """Pick up trigger changes (cheap when nothing changed)."""
        if self.registry.built != self._version:
            self._version = self.registry.built
            self.triggers = self.registry.current()
            self.ctx = StateContext(self.stores, self.loyalty, self.triggers.dwell_thresholds_ms())

    async def process(self, event: MemberEvent, partition: int = 0) -> None:
        """`partition`: the member-events partition the event came from (its timer clock)."""
        self.refresh()
        MEMBER_EVENTS.labels(event.type).inc()
        if event.type == "identified":
            await hand_over_anonymous(event, self.ctx)
            return
        if event.type == "merge":
            take_over_anonymous(event, self.ctx, partition)
            return
        if not keeps_state(event):
            return
        before = member_state_table.get(event.member_id)
        if event.type == "timer" and before is None:
            schedule_next(event.member_id, None)  # a tick for a member since forgotten
            return
        now = int(time.time() * 1000)
        result = step(before, event_scope(event), self.triggers, self.ctx, now)
        if result.replayed is not None:
            MEMBER_REPLAYS.inc()
            schedule_next(event.member_id, result.next_due, partition=partition)
            for action in result.replayed:  # in case the first try stopped short of sending
                await actions_topic.send(key=event.member_id, value=Action(**action))
            return
        if event.type != "timer":
            clock.observe(event.ts, now, partition)
        member_state_table[event.member_id] = result.record
        schedule_next(
            event.member_id, result.next_due, force=event.type == "timer", partition=partition
        )
        await self.publish(result, now)

    async def publish(self, result: StepResult, now: int) -> None:
        """Derived events, decisions and actions leave for their topics."""
        member_id = result.record["member_id"]
        for d in result.derived:
            DERIVED_EVENTS.labels(d["type"]).inc()
            if not self.publish_derived:
                continue
            attrs = {k: v for k, v in d.items() if k not in _EVENT_FIELDS}
            await derived_events_topic.send(
                key=member_id,
                value=MemberEvent(
                    event_id=d["event_id"],
                    member_id=member_id,
                    type=d["type"],
                    ts=d["ts"],
                    store_id=d.get("store_id"),
                    source="derived",
                    attrs=attrs,
                ),
            )
        for ev, decision in result.decisions:
            count_decision(decision.trigger_id, decision.verdict, decision.reason)
            if decision.verdict == "error":
                TRIGGER_ERRORS.labels(decision.trigger_id).inc()
                self.registry.record_error(decision.trigger_id, decision.reason)
            # Fired and held out: treated vs control, what uplift needs. Suppressions are
            # counted (and /explain says why); published, 10,000 triggers made a frequency-capped
            # gold member's check-in ~100 records.
            if decision.verdict in _PUBLISHED_VERDICTS and self.publish_decisions:
                await decisions_topic.send(
                    key=member_id,
                    value=DecisionRecord(
                        trigger_id=decision.trigger_id,
                        member_id=member_id,
                        event_id=ev["event_id"],
                        verdict=decision.verdict,
                        reason=decision.reason,
                        ts=now,
                    ),
                )
        for action in result.actions:
            await actions_topic.send(key=member_id, value=Action(**action))
            ACTIONS_OUT.labels(action["trigger_id"], action["channel"]).inc()


_EVENT_FIELDS = ("event_id", "member_id", "type", "ts", "store_id")
_PUBLISHED_VERDICTS = frozenset({"fired", "held_out"})


@app.agent(member_events_topic, name="storepulse.members.evaluate")
@supervised("members")
async def evaluate_member_events(stream: faust.StreamT[MemberEvent]) -> None:
    processor = MemberProcessor(
        registry, load_stores(settings.stores_path), load_loyalty(settings.loyalty_path)
    )
    # Iterate at once and wait for the trigger definitions inside the loop: faust delivers a
    # record only to streams already iterating and moves past it otherwise (it is neither
    # processed nor committed-behind). Waiting before `async for` lost every member event
    # fetched while the definitions loaded (found by tests/integration/test_bulk_load.py).
    async for event in stream:
        if not registry.ready.is_set():
            await registry.ready.wait()  # never evaluate before the definitions are loaded
        message = stream.current_event.message if stream.current_event else None
        partition = message.partition if message else 0
        try:
            await process_until_done(processor, event, partition)
        except Exception as exc:  # one bad record must not stop every member behind it
            logger.exception("member agent failed on member-events[%d]", partition)
            await dead_letter(
                "member-events",
                partition,
                message.offset if message else -1,
                message.key if message else None,
                message.value if message else None,
                "internal",
                f"members: {type(exc).__name__} while folding or evaluating the event; see "
                "the worker log at this offset",
            )


async def process_until_done(
    processor: MemberProcessor, event: MemberEvent, partition: int = 0
) -> None:
    """Retry an event whose table write faust refused for lack of Kafka metadata.

    Right after a broker restart faust can read 0 partitions for a changelog topic and raise
    PartitionsMismatch from a table write; left alone that kills this agent for good while the
    worker looks alive (found by `make chaos`). The write is refused before anything changes, and
    a retried event is recognised as applied (state.member_state.replayed_actions), so retrying
    is safe. A real mismatch (a misconfigured topic) keeps being logged as an error.
    """
    waited = 0.0
    while True:
        try:
            await processor.process(event, partition)
            return
        except PartitionsMismatch as exc:
            log = logger.error if waited >= 30 else logger.warning
            log("table write refused (%s); retrying in 1 s", str(exc).splitlines()[0])
            await asyncio.sleep(1.0)
            waited += 1.0
