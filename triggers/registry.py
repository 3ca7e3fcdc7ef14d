"""The triggers every worker evaluates: read from the compacted `triggers` topic, applied live.

Each worker reads the whole topic with its own consumer (no consumer group), so every worker sees
every definition, and a change applies within a second without a restart. This sidesteps faust's
GlobalTable, whose recovery can loop forever with several app instances. A definition that does
not validate is reported and the previous version of that trigger stays in force.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from core.metrics import TRIGGER_DEFINITION_ERRORS, TRIGGERS_LOADED, TRIGGERS_PAUSED
from core.settings import KafkaTarget, kafka_options
from triggers.catalog import References
from triggers.engine import Caps, CompiledTrigger, TriggerSet
from triggers.lifecycle import AuditRecord, Change, TriggerRecord, audit_of, read_record
from triggers.loader import describe_errors
from triggers.model import TriggerDef

logger = logging.getLogger("storepulse.triggers")


@dataclass
class TriggerRegistry:
    caps: Caps | None = None
    refs: References | None = None  # pools, stores and zones a definition may name
    definitions: dict[str, TriggerDef] = field(default_factory=dict)  # every status
    # trigger id -> its record's status, version, author, at, note (triggers/lifecycle.py)
    meta: dict[str, dict[str, object]] = field(default_factory=dict)
    version: int = 0  # changes applied
    built: int = -1  # version of `current()`
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # trigger id -> why it is paused (first error, when, how many): left out of `current()`
    paused: dict[str, dict[str, object]] = field(default_factory=dict)
    error_limit: int = 20
    error_window_s: float = 60.0
    _errors: dict[str, deque[float]] = field(default_factory=dict)
    _first_error: dict[str, str] = field(default_factory=dict)
    _current: TriggerSet = field(default_factory=TriggerSet)
    _compiled: dict[str, CompiledTrigger] = field(default_factory=dict)

    def record_error(self, trigger_id: str, reason: str, now_s: float | None = None) -> bool:
        """Count an `error` decision; pause the trigger on this worker once it erred on
        `error_limit` events within `error_window_s`. True when this call paused it."""
        if trigger_id in self.paused:
            return False
        now_s = time.time() if now_s is None else now_s
        if trigger_id not in self._first_error:
            self._first_error[trigger_id] = reason
            logger.warning("trigger %s raised %s (decision `error`)", trigger_id, reason)
        times = self._errors.setdefault(trigger_id, deque(maxlen=self.error_limit))
        times.append(now_s)
        if len(times) < self.error_limit or now_s - times[0] > self.error_window_s:
            return False
        self.paused[trigger_id] = {
            "reason": "errors",
            "first_error": self._first_error[trigger_id],
            "errors": len(times),
            "paused_at": int(now_s * 1000),
        }
        logger.error(
            "trigger %s paused on this worker: %d errors within %.0f s, first %s; publish it "
            "again (fixed) to resume",
            trigger_id,
            len(times),
            self.error_window_s,
            self._first_error[trigger_id],
        )
        TRIGGERS_PAUSED.set(len(self.paused))
        self.version += 1
        self.rebuild(freeze=False)
        return True

    def _resume(self, trigger_id: str) -> None:
        """A definition published again starts with a clean slate."""
        self._errors.pop(trigger_id, None)
        self._first_error.pop(trigger_id, None)
        if self.paused.pop(trigger_id, None) is not None:
            TRIGGERS_PAUSED.set(len(self.paused))

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Apply one record of the triggers topic; returns an error message if it was rejected."""
        trigger_id = (key or b"").decode(errors="replace")
        if value is None:
            self._resume(trigger_id)
            self.meta.pop(trigger_id, None)
            if self.definitions.pop(trigger_id, None) is not None:
                self.version += 1
            return None
        try:
            record = read_record(value)
            definition = TriggerDef.model_validate(record["definition"], context=self.refs)
        except (orjson.JSONDecodeError, ValidationError, ValueError) as exc:
            errors = (
                describe_errors(exc, f"triggers topic key {trigger_id!r}")
                if isinstance(exc, ValidationError)
                else [f"not a trigger record: {exc}"]
            )
            TRIGGER_DEFINITION_ERRORS.inc()
            return "; ".join(errors)
        if definition.id != trigger_id:
            TRIGGER_DEFINITION_ERRORS.inc()
            return f"record key {trigger_id!r} differs from the trigger id {definition.id!r}"
        self.definitions[trigger_id] = definition
        self.meta[trigger_id] = {k: v for k, v in record.items() if k != "definition"}
        self._resume(trigger_id)
        self.version += 1
        return None

    def record(self, trigger_id: str) -> TriggerRecord | None:
        """The trigger's current record (status, version, definition), as on the topic."""
        meta, definition = self.meta.get(trigger_id), self.definitions.get(trigger_id)
        if meta is None or definition is None:
            return None
        return cast(
            TriggerRecord,
            {**meta, "definition": definition.model_dump(mode="json", by_alias=True)},
        )

    def holds(self, trigger_id: str, record: TriggerRecord | None) -> bool:
        """Whether this worker's view has `record` (None: the trigger deleted) for the trigger."""
        meta = self.meta.get(trigger_id)
        if record is None or meta is None:
            return record is None and meta is None
        return all(meta.get(k) == record[k] for k in ("version", "status", "at"))

    async def caught_up_with(
        self, trigger_id: str, record: TriggerRecord | None, timeout: float = 5.0
    ) -> bool:
        """Wait until the topic's record `record` is in this worker's view (it follows the topic
        within a second): the API answers a change once the next request sees it."""
        deadline = time.monotonic() + timeout
        while not self.holds(trigger_id, record):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def rebuild(self, freeze: bool = True) -> None:
        active = [
            d
            for d in self.definitions.values()
            if d.id not in self.paused and self.meta.get(d.id, {}).get("status", "live") == "live"
        ]
        self._current = TriggerSet.build(active, self.caps, self._compiled)
        self.built = self.version
        TRIGGERS_LOADED.set(len(self._current))
        if freeze:
            freeze_long_lived()

    def current(self) -> TriggerSet:
        return self._current

    async def follow(
        self,
        kafka: KafkaTarget,
        topic: str,
        on_error: Callable[[ConsumerRecord[bytes, bytes], str], Awaitable[None]] | None = None,
    ) -> None:
        """Read the topic from the start for ever; `ready` is set once caught up at start-up."""
        consumer = whole_topic_consumer(kafka, topic)
        await consumer.start()
        try:
            partitions = list(consumer.assignment())
            if not partitions:
                raise KafkaError(f"topic {topic!r} has no partitions (does it exist?)")
            end = await consumer.end_offsets(partitions)
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                changed = self.version
                for records in batches.values():
                    for rec in records:
                        error = self.apply(rec.key, rec.value)
                        if error:
                            logger.error("trigger definition rejected: %s", error)
                            if on_error:
                                await on_error(rec, error)
                if self.version != changed or self.built != self.version:
                    # while loading, a freeze per batch would cost a full collection each
                    self.rebuild(freeze=self.ready.is_set())
                if not self.ready.is_set() and await _caught_up(consumer, end):
                    freeze_long_lived()
                    logger.info("triggers loaded: %d enabled", len(self._current))
                    self.ready.set()
        finally:
            await consumer.stop()


_FULL_EVERY = 50  # rebuilds between collections that also walk what earlier builds froze
_freezes = 0


def freeze_long_lived() -> None:
    """Move what is alive now (definitions, compiled triggers, modules) out of the cyclic GC's
    reach.

    10,000 triggers are ~850,000 objects; every full collection walked them all, 340 ms with the
    event loop stopped, and that was the p99 of the 10,000-trigger benchmark. A rebuild's
    collection walks only what is not frozen yet (an edit costs milliseconds, not the 300 ms of
    walking everything); what a rebuild drops is freed by reference counting, and every
    `_FULL_EVERY`-th one unfreezes first, so cycles among dropped frozen objects (none are
    known) cannot pile up.
    """
    global _freezes
    if _freezes % _FULL_EVERY == 0:
        gc.unfreeze()
    _freezes += 1
    gc.collect()
    gc.freeze()


def whole_topic_consumer(kafka: KafkaTarget, topic: str) -> AIOKafkaConsumer:
    """No consumer group: every partition is assigned to this consumer, from the start."""
    return AIOKafkaConsumer(
        topic,
        **kafka_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def _caught_up(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


async def published(
    kafka: KafkaTarget, topic: str, timeout: float = 30.0
) -> dict[str, TriggerRecord | None]:
    """Every trigger id the topic holds a record for, with its latest record (None: deleted; a
    deletion by the API must not be undone by a worker restarting with the sample files)."""
    consumer = whole_topic_consumer(kafka, topic)
    await consumer.start()
    found: dict[str, TriggerRecord | None] = {}
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (partitions := list(consumer.assignment())):  # metadata of a new topic
            if asyncio.get_running_loop().time() > deadline:
                raise KafkaError(f"topic {topic!r} has no partitions (does it exist?)")
            await asyncio.sleep(0.1)
        end = await consumer.end_offsets(partitions)
        while not await _caught_up(consumer, end):
            if asyncio.get_running_loop().time() > deadline:
                raise KafkaError(f"could not read {topic!r} to its end in {timeout:.0f} s")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if not r.key:
                        continue
                    try:
                        record = read_record(r.value) if r.value is not None else None
                    except ValueError:  # not JSON or a bad status: known, never re-seeded
                        record = None
                    found[r.key.decode(errors="replace")] = record
    finally:
        await consumer.stop()
    return found


async def seed(
    kafka: KafkaTarget, topic: str, definitions: Sequence[TriggerDef], audit_topic: str = ""
) -> tuple[list[str], list[str]]:
    """Publish the trigger files' definitions whose ids the topic has no record of; (published,
    left alone). A definition edited through the API is never overwritten by a restart."""
    known = await published(kafka, topic)
    fresh = [d for d in definitions if d.id not in known]
    if fresh:
        await publish(kafka, topic, fresh, audit_topic=audit_topic, author="trigger files")
    return [d.id for d in fresh], [d.id for d in definitions if d.id in known]


def definition_doc(d: TriggerDef) -> dict[str, object]:
    return cast(dict[str, object], d.model_dump(mode="json", by_alias=True, exclude_defaults=False))


async def publish(
    kafka: KafkaTarget,
    topic: str,
    definitions: Sequence[TriggerDef],
    deletes: Sequence[str] = (),
    audit_topic: str = "",
    author: str = "",
    note: str = "",
    versions: dict[str, int] | None = None,
) -> None:
    """Write definitions as live records (version `versions[id]`, else 1) and deletions
    (tombstones) to the triggers topic, each change first to `audit_topic` when given."""
    at = int(time.time() * 1000)
    changes: list[tuple[str, Change, TriggerRecord | None]] = []
    for d in definitions:
        record = TriggerRecord(
            status="live",
            version=(versions or {}).get(d.id, 1),
            author=author,
            at=at,
            note=note,
            definition=definition_doc(d),
        )
        changes.append((d.id, "publish", record))
    changes += [(trigger_id, "delete", None) for trigger_id in deletes]
    await write_changes(kafka, topic, audit_topic, changes, author, note, at)


async def write_changes(
    kafka: KafkaTarget,
    topic: str,
    audit_topic: str,
    changes: Sequence[tuple[str, Change, TriggerRecord | None]],
    author: str,
    note: str,
    at: int,
) -> None:
    """Each change to the audit (kept for good) and then to the triggers topic; None deletes."""
    producer = AIOKafkaProducer(**kafka_options(kafka), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for trigger_id, change, record in changes:
            key = trigger_id.encode()
            if audit_topic:
                entry: AuditRecord = audit_of(trigger_id, change, record, author, at, note)
                await producer.send_and_wait(audit_topic, orjson.dumps(entry), key=key)
            value = orjson.dumps(record) if record is not None else None
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@dataclass
class AuditLog:
    """Every change to every trigger, read from `trigger-audit` by each worker (its own
    consumer, from the start), for versions, diffs and `GET /audit`."""

    entries: list[AuditRecord] = field(default_factory=list)
    by_trigger: dict[str, list[AuditRecord]] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, value: bytes | None) -> None:
        try:
            entry = orjson.loads(value or b"null")
        except orjson.JSONDecodeError:
            return
        if not isinstance(entry, dict) or not isinstance(entry.get("trigger_id"), str):
            return
        self.entries.append(cast(AuditRecord, entry))
        self.by_trigger.setdefault(entry["trigger_id"], []).append(cast(AuditRecord, entry))

    async def follow(self, kafka: KafkaTarget, topic: str) -> None:
        consumer = whole_topic_consumer(kafka, topic)
        await consumer.start()
        try:
            partitions = list(consumer.assignment())
            end = await consumer.end_offsets(partitions) if partitions else {}
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for rec in records:
                        self.add(rec.value)
                if batches:
                    self.entries.sort(key=lambda e: (e.get("at", 0), e.get("version", 0)))
                if not self.ready.is_set() and await _caught_up(consumer, end):
                    self.ready.set()
        finally:
            await consumer.stop()
