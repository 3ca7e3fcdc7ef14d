"""Member agent: folds each canonical event into member state, evaluates triggers on it and on the
events it derives (visits, zones, dwell, tiers), emits actions, and keeps the timer schedule.

A member-events record is a batch (contracts/batches.py): its events are folded one by one with
the pure `step`, then the batch is written at once: one store write and one changelog record per
dirty member (faust_ext.batch_io), one record each for its derived events, decisions and actions.

It also carries anonymous histories over to members: an `identified` event arrives on the
anonymous visitor's partition, which hands the record to the member's partition as a `merge`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
import orjson
from aiokafka.errors import KafkaError
from faust.exceptions import PartitionsMismatch, ProducerSendError

from agents.supervisor import supervised
from app import current
from contracts.batches import pack_chunks, unpack
from core.metrics import (
    ACTIONS_OUT,
    CONVERSIONS,
    DERIVED_EVENTS,
    DUPLICATE_RECEIPTS,
    ERASED,
    MEMBER_EVENTS,
    MEMBER_REPLAYS,
    MERGES,
    REDEMPTIONS,
    TRIGGER_ERRORS,
    count_decision,
)
from edge.dead_letters import dead_letter
from faust_ext.batch_io import TableRows, produce
from state.coupons import code_for, load_pools
from state.loyalty import Loyalty, load_loyalty
from state.member_state import (
    StateContext,
    new_member,
)
from state.members import member_state_table, member_timers_table
from state.records import MemberRecord
from state.stores import Store, load_stores
from state.timers import clock, partition_of, schedule
from topics import MemberEvent, member_events_topic, topic_name
from triggers.attribution import REDEEMED, handovers
from triggers.engine import TriggerSet
from triggers.live import registry
from triggers.pipeline import StepResult, merge, step
from triggers.registry import TriggerRegistry

app, settings = current()

logger = logging.getLogger("storepulse.members")


def event_scope(event: MemberEvent) -> dict[str, Any]:
    """What conditions see as `event`: the canonical fields plus the source's own attributes."""
    return {
        **event.get("attrs", {}),
        "event_id": event["event_id"],
        "member_id": event["member_id"],
        "type": event["type"],
        "ts": event["ts"],
        "store_id": event.get("store_id"),
    }


def keeps_state(event: MemberEvent) -> bool:
    """Guests and rotating random MACs are counted, but have no member to remember."""
    return not (
        event["member_id"].startswith("guest-")
        or event.get("attrs", {}).get("identified_by") == "mac_random"
    )


def well_formed(item: Any) -> str | None:
    """Why `item` is not a member event, or None: the fields every step relies on."""
    if not isinstance(item, dict):
        return f"a {type(item).__name__}, not an object"
    for name, kind in _REQUIRED:
        if not isinstance(item.get(name), kind):
            return f"{name}: missing or not a {kind.__name__}"
    if not isinstance(item.get("attrs", {}), dict):
        return "attrs: not an object"
    return None


_REQUIRED = (("event_id", str), ("member_id", str), ("type", str), ("ts", int))


class Batch:
    """What one member-events record changes and emits, written together at its end: one store
    write and one changelog record per dirty member, one record per output topic."""

    def __init__(self, partition: int, state_rows: TableRows, timer_rows: TableRows) -> None:
        self.partition = partition
        self.state_rows, self.timer_rows = state_rows, timer_rows
        self.states: dict[str, MemberRecord | None] = {}  # None: delete
        self.timers: dict[str, dict[str, int] | None] = {}
        self.seen: Counter[str] = Counter()  # events of each member applied so far
        self.derived: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.conversions: list[dict[str, Any]] = []
        self.handovers: dict[int, list[dict[str, Any]]] = {}  # merges for other partitions

    def state(self, member_id: str) -> Any:
        if member_id in self.states:
            return self.states[member_id]
        return self.state_rows.get(self.partition, member_id)

    def timer(self, member_id: str) -> Any:
        if member_id in self.timers:
            return self.timers[member_id]
        return self.timer_rows.get(self.partition, member_id)

    def schedule_next(self, member_id: str, due: int | None, force: bool = False) -> None:
        """Persist the next due time only when it moves earlier (or after a tick): the stored
        time is never later than the real one, so nothing is missed, and most events write
        nothing."""
        stored = self.timer(member_id)
        if due is None:
            if stored is not None:
                self.timers[member_id] = None
            schedule.set(member_id, None)
        elif force or stored is None or due < stored["due"]:
            self.timers[member_id] = {"due": due}
            schedule.set(member_id, due, self.partition)


def hand_over_anonymous(event: MemberEvent, batch: Batch) -> None:
    """On the anonymous id's partition: send its history to the member, then forget it."""
    anon_id, member_id = event["member_id"], event["attrs"]["member_id"]
    record = batch.state(anon_id)
    if record is None:
        return  # never seen, or already handed over (a replay)
    batch.handovers.setdefault(partition_of(member_id, settings.partitions), []).append(
        {
            "event_id": f"merge:{anon_id}",
            "member_id": member_id,
            "type": "merge",
            "ts": event["ts"],
            "source": "identity",
            "attrs": {"anonymous_id": anon_id, "record": record},
        }
    )
    batch.states[anon_id] = None
    batch.schedule_next(anon_id, None)


def take_over_anonymous(
    event: MemberEvent, triggers: TriggerSet, ctx: StateContext, batch: Batch, now: int
) -> StepResult | None:
    """On the member's partition: fold the visitor's history in (a tier it lifts is decided)."""
    member_id = event["member_id"]
    stored = batch.state(member_id)
    attrs = event["attrs"]
    result = merge(
        stored or new_member(member_id), attrs["anonymous_id"], attrs["record"], triggers, ctx, now
    )
    if result is not None:
        MERGES.inc()
        batch.states[member_id] = result.record
        batch.schedule_next(member_id, result.next_due)
    return result


class MemberProcessor:
    """Evaluates member events end to end, a batch at a time; the agent only feeds it."""

    def __init__(
        self, registry: TriggerRegistry, stores: Mapping[str, Store], loyalty: Loyalty
    ) -> None:
        self.registry = registry
        self.stores = stores
        self.loyalty = loyalty
        self._version = -1
        self.triggers = registry.current()
        pools = load_pools(settings.coupons_path)
        self.code_of = lambda pool, action_id: (
            code_for(settings, pool, pools[pool].prefix, action_id) if pool in pools else None
        )
        self.ctx = StateContext(stores, loyalty, coupon_code=self.code_of)
        self.publish_derived = "derived-events" in settings.analytics
        self.publish_decisions = "decisions" in settings.analytics
        self.state_rows = TableRows(app, member_state_table)
        self.timer_rows = TableRows(app, member_timers_table)
        self.names = {
            name: topic_name(name)
            for name in ("member-events", "derived-events", "decisions", "actions", "conversions")
        }

    def refresh(self) -> None:
        """Pick up trigger changes (cheap when nothing changed)."""
        if self.registry.built != self._version:
            self._version = self.registry.built
            self.triggers = self.registry.current()
            self.ctx = StateContext(
                self.stores,
                self.loyalty,
                self.triggers.dwell_thresholds_ms(),
                coupon_code=self.code_of,
            )

    def process(self, event: MemberEvent, batch: Batch, now: int) -> None:
        """One event of the batch: its changes go into `batch`, nothing is written yet."""
        kind = event["type"]
        if kind == "identified":
            hand_over_anonymous(event, batch)
            return
        if kind == "merge":
            merged = take_over_anonymous(event, self.triggers, self.ctx, batch, now)
            if merged is not None:
                self.collect(merged, batch, now)
            return
        if kind == "erase":  # DELETE /members/{id}: the record, its timer, all it remembered
            member_id = event["member_id"]
            if batch.state(member_id) is not None:
                batch.states[member_id] = None  # a tombstone on the changelog
            batch.schedule_next(member_id, None)
            ERASED.inc()
            return
        if not keeps_state(event):
            if kind == "purchase":  # a guest's sale may still redeem a member's coupon
                self.hand_over(handovers(event_scope(event), event["member_id"]), batch)
            return
        member_id = event["member_id"]
        before = batch.state(member_id)
        if kind in ("timer", REDEEMED) and before is None:  # a member since forgotten (erased)
            batch.schedule_next(member_id, None)
            return
        result = step(
            before,
            event_scope(event),
            self.triggers,
            self.ctx,
            now,
            batch=batch.seen[member_id],
        )
        if result.replayed is not None:
            (DUPLICATE_RECEIPTS if result.same_receipt else MEMBER_REPLAYS).inc()
            batch.schedule_next(member_id, result.next_due)
            batch.actions += result.replayed  # in case the first try stopped short of sending
            return
        batch.seen[member_id] += 1
        if kind != "timer" and not event.get("attrs", {}).get("history"):
            clock.observe(event["ts"], now, batch.partition)  # history is not the stream's time
        batch.states[member_id] = result.record
        batch.schedule_next(member_id, result.next_due, force=kind == "timer")
        self.collect(result, batch, now)

    def hand_over(self, events: list[dict[str, Any]], batch: Batch) -> None:
        for e in events:
            partition = partition_of(e["member_id"], settings.partitions)
            batch.handovers.setdefault(partition, []).append(e)

    def collect(self, result: StepResult, batch: Batch, now: int) -> None:
        """Derived events, decisions and actions join the batch's output records."""
        member_id = result.record["member_id"]
        self.hand_over(result.handovers, batch)
        for d in result.derived:
            DERIVED_EVENTS.labels(d["type"]).inc()
            if self.publish_derived:
                batch.derived.append(
                    {
                        "event_id": d["event_id"],
                        "member_id": member_id,
                        "type": d["type"],
                        "ts": d["ts"],
                        "store_id": d.get("store_id"),
                        "source": "derived",
                        "attrs": {k: v for k, v in d.items() if k not in _EVENT_FIELDS},
                    }
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
                batch.decisions.append(
                    {
                        "trigger_id": decision.trigger_id,
                        "member_id": member_id,
                        "event_id": ev["event_id"],
                        "verdict": decision.verdict,
                        "reason": decision.reason,
                        "store_id": ev.get("store_id"),
                        "ts": now,
                    }
                )
        for c in result.conversions:
            if c["kind"] == "redemption":
                REDEMPTIONS.labels(c.get("trigger_id", "-"), c["outcome"]).inc()
            else:
                CONVERSIONS.labels(c["trigger_id"], c["group"]).inc()
            batch.conversions.append(c)
        for action in result.actions:
            batch.actions.append(action)
            ACTIONS_OUT.labels(action["trigger_id"], action["channel"]).inc()

    async def write(self, batch: Batch) -> None:
        """Hand-overs to other members' partitions first, acknowledged by Kafka; then state, then
        what it caused; each retried until Kafka takes it (see `until_written`). Every stage is
        idempotent or recognised downstream (action ids, event ids, merged ids).

        A merge's hand-over carries the visitor's history while the state write tombstones it:
        were the tombstone stored and the hand-over lost (a SIGKILL between the two), the replay
        would find nothing left to hand over. Hand-overs are rare (identifications, a code of
        another member's redeemed), so waiting for their acknowledgement costs little."""
        p = batch.partition
        if batch.handovers:
            acks: list[asyncio.Future[Any]] = []

            def hand_over(value: bytes, partition: int) -> Callable[[], Awaitable[Any]]:
                async def send() -> None:
                    acks.append(await produce(app, self.names["member-events"], value, partition))

                return send

            for partition, events in batch.handovers.items():
                for value in pack_chunks("events", events):
                    await until_written(hand_over(value, partition))
            await asyncio.gather(*acks)
        stages: list[Callable[[], Awaitable[Any]]] = [
            lambda: self.state_rows.write(p, batch.states),
            lambda: self.timer_rows.write(p, batch.timers),
        ]
        for name, kind, items in (
            ("derived-events", "events", batch.derived),
            ("decisions", "decisions", batch.decisions),
            ("actions", "actions", batch.actions),
            ("conversions", "conversions", batch.conversions),
        ):
            if items:
                for value in pack_chunks(kind, items):
                    stages.append(self._sender(self.names[name], value, p))
        for stage in stages:
            await until_written(stage)

    def _sender(self, topic: str, value: bytes, partition: int) -> Callable[[], Awaitable[Any]]:
        return lambda: produce(app, topic, value, partition)


_EVENT_FIELDS = ("event_id", "member_id", "type", "ts", "store_id")
_PUBLISHED_VERDICTS = frozenset({"fired", "held_out"})


async def until_written(stage: Callable[[], Awaitable[Any]]) -> None:
    """Retry a write Kafka refused for lack of metadata.

    Right after a broker restart the producer can see 0 partitions for a topic and refuse a
    record for an explicit partition; left alone that kills this agent for good while the worker
    looks alive (found by `make chaos`, then as faust's PartitionsMismatch). Nothing of the batch
    is committed meanwhile. A lasting refusal (a misconfigured topic) keeps being logged as an
    error.
    """
    waited = 0.0
    while True:
        try:
            await stage()
            return
        except (PartitionsMismatch, KafkaError, ProducerSendError, AssertionError) as exc:
            log = logger.error if waited >= 30 else logger.warning
            log("Kafka refused a write (%s); retrying in 1 s", str(exc).splitlines()[0:1])
            await asyncio.sleep(1.0)
            waited += 1.0


@app.agent(member_events_topic, name="storepulse.members.evaluate")
@supervised("members")
async def evaluate_member_events(stream: faust.StreamT[bytes]) -> None:
    processor = MemberProcessor(
        registry, load_stores(settings.stores_path), load_loyalty(settings.loyalty_path)
    )
    # Iterate at once and wait for the trigger definitions inside the loop: faust delivers a
    # record only to streams already iterating and moves past it otherwise (it is neither
    # processed nor committed-behind). Waiting before `async for` lost every member event
    # fetched while the definitions loaded (found by tests/integration/test_bulk_load.py).
    async for ev in stream.events():
        if not registry.ready.is_set():
            await registry.ready.wait()  # never evaluate before the definitions are loaded
        message = ev.message
        await evaluate_record(
            processor, message.partition, message.offset, message.key, message.value
        )


async def evaluate_record(
    processor: MemberProcessor,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> None:
    """One member-events record (a batch of events, or one): fold each event, then write the
    batch. A record that does not decode, or one event that fails, is dead-lettered alone."""
    try:
        items = unpack(value)
    except orjson.JSONDecodeError as exc:
        await dead_letter(
            "member-events", partition, offset, key, value, "not_decodable", f"not JSON: {exc}"
        )
        return
    processor.refresh()
    batch = Batch(partition, processor.state_rows, processor.timer_rows)
    now = int(time.time() * 1000)
    kinds: Counter[str] = Counter()
    single = len(items) == 1
    for index, item in enumerate(items):
        problem = well_formed(item)
        if problem is None:
            kinds[item["type"]] += 1
            try:
                processor.process(item, batch, now)
                continue
            except Exception as exc:  # one bad event must not stop every member behind it
                logger.exception("member agent failed on member-events[%d]@%d", partition, offset)
                reason = "internal"
                problem = (
                    f"members: {type(exc).__name__} while folding or evaluating the event; see "
                    "the worker log at this offset"
                )
        else:
            reason = "not_decodable"
        await dead_letter(
            "member-events",
            partition,
            offset,
            key,
            value if single else orjson.dumps(item),
            reason,
            problem,
            None if single else index,
        )
    for kind, n in kinds.items():
        MEMBER_EVENTS.labels(kind).inc(n)
    await processor.write(batch)
