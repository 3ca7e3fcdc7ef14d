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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from app import settings
from metrics import TRIGGER_DEFINITION_ERRORS, TRIGGERS_LOADED
from settings import parse_caps
from triggers.engine import Caps, CompiledTrigger, TriggerSet
from triggers.loader import describe_errors
from triggers.model import TriggerDef

logger = logging.getLogger("storepulse.triggers")


@dataclass
class TriggerRegistry:
    caps: Caps | None = None
    definitions: dict[str, TriggerDef] = field(default_factory=dict)
    version: int = 0  # changes applied
    built: int = -1  # version of `current()`
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _current: TriggerSet = field(default_factory=TriggerSet)
    _compiled: dict[str, CompiledTrigger] = field(default_factory=dict)

    def apply(self, key: bytes | None, value: bytes | None) -> str | None:
        """Apply one record of the triggers topic; returns an error message if it was rejected."""
        trigger_id = (key or b"").decode(errors="replace")
        if value is None:
            if self.definitions.pop(trigger_id, None) is not None:
                self.version += 1
            return None
        try:
            definition = TriggerDef.model_validate(orjson.loads(value))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            errors = (
                describe_errors(exc, f"triggers topic key {trigger_id!r}")
                if isinstance(exc, ValidationError)
                else [f"not JSON: {exc}"]
            )
            TRIGGER_DEFINITION_ERRORS.inc()
            return "; ".join(errors)
        if definition.id != trigger_id:
            TRIGGER_DEFINITION_ERRORS.inc()
            return f"record key {trigger_id!r} differs from the trigger id {definition.id!r}"
        self.definitions[trigger_id] = definition
        self.version += 1
        return None

    def rebuild(self, freeze: bool = True) -> None:
        self._current = TriggerSet.build(self.definitions.values(), self.caps, self._compiled)
        self.built = self.version
        TRIGGERS_LOADED.set(len(self._current))
        if freeze:
            freeze_long_lived()

    def current(self) -> TriggerSet:
        return self._current

    async def follow(
        self,
        bootstrap: str,
        topic: str,
        on_error: Callable[[ConsumerRecord[bytes, bytes], str], Awaitable[None]] | None = None,
    ) -> None:
        """Read the topic from the start for ever; `ready` is set once caught up at start-up."""
        # No consumer group: every partition is assigned to this consumer, from the start.
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
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


async def _caught_up(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


async def publish(
    bootstrap: str, topic: str, definitions: Sequence[TriggerDef], deletes: Sequence[str] = ()
) -> None:
    """Write definitions (key: trigger id) and deletions (tombstones) to the triggers topic."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for d in definitions:
            body = orjson.dumps(d.model_dump(mode="json", by_alias=True, exclude_defaults=False))
            await producer.send_and_wait(topic, body, key=d.id.encode())
        for trigger_id in deletes:
            await producer.send_and_wait(topic, None, key=trigger_id.encode())
    finally:
        await producer.stop()


# This worker's registry: fed by agents/trigger_feed.py, read by the member agent and the API.
registry = TriggerRegistry(caps=parse_caps(settings.frequency_caps))
