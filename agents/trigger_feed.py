"""Keeps this worker's trigger registry in step with the compacted `triggers` topic, and its
audit log with `trigger-audit`."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from app import current
from edge.dead_letters import dead_letter
from topics import AUDIT_TOPIC, TRIGGERS_TOPIC
from triggers.live import audit, registry

app, settings = current()

logger = logging.getLogger("storepulse.triggers")


async def _reject(record: ConsumerRecord[bytes, bytes], error: str) -> None:
    await dead_letter(
        "triggers",
        record.partition,
        record.offset,
        record.key,
        record.value,
        "invalid_trigger",
        error[:500],
    )


@app.task
async def follow_trigger_definitions() -> None:
    """Runs for the life of the worker; a broken connection is retried, not fatal."""
    while True:
        try:
            await registry.follow(settings.kafka(), TRIGGERS_TOPIC, on_error=_reject)
        except KafkaError as exc:
            logger.warning("lost the triggers topic (%r); reconnecting", exc)
            await asyncio.sleep(1.0)


@app.task
async def follow_trigger_audit() -> None:
    """Every change to every trigger (versions, diffs, `GET /audit`), for the life of the worker."""
    while True:
        audit.entries.clear()
        audit.by_trigger.clear()
        try:
            await audit.follow(settings.kafka(), AUDIT_TOPIC)
        except KafkaError as exc:
            logger.warning("lost the trigger-audit topic (%r); reconnecting", exc)
            await asyncio.sleep(1.0)
