"""Keeps this worker's trigger registry in step with the compacted `triggers` topic."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from app import current
from edge.dead_letters import dead_letter
from topics import TRIGGERS_TOPIC
from triggers.live import registry

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
