"""Edge agents: validate input records, resolve the member, forward canonical events.

Every consumed record ends in exactly one place: member-events, or dead-letter with a reason.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import faust
from redis.exceptions import RedisError

from app import app, settings
from metrics import DEAD_LETTERS, EVENTS_FORWARDED, EVENTS_IN, REDIS_UP
from state.identity import KINDS, resolve_member
from state.redis_store import redis_client
from topics import (
    INPUT_TOPICS,
    DeadLetter,
    InputEvent,
    MemberEvent,
    dead_letter_topic,
    member_events_topic,
)
from validation import Accepted, validate

logger = logging.getLogger("storepulse.ingest")

_BASE_FIELDS = {"event_id", "ts", "kind", "store_id", *KINDS}


def now_ms() -> int:
    return int(time.time() * 1000)


async def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    message: str,
) -> None:
    DEAD_LETTERS.labels(topic, reason).inc()
    logger.warning("dead-letter %s[%d]@%d %s: %s", topic, partition, offset, reason, message)
    await dead_letter_topic.send(
        key=f"{topic}:{partition}:{offset}",
        value=DeadLetter(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key_b64=base64.b64encode(key).decode() if key is not None else None,
            value_b64=base64.b64encode(value or b"").decode(),
            reason=reason,
            message=message,
            at=now_ms(),
        ),
    )


def canonical(topic: str, event: InputEvent, member_id: str) -> MemberEvent:
    data: dict[str, Any] = event.model_dump(exclude_none=True)
    attrs = {k: v for k, v in data.items() if k not in _BASE_FIELDS}
    return MemberEvent(
        event_id=event.event_id,
        member_id=member_id,
        type=data.get("kind", topic),
        ts=event.ts,
        store_id=data.get("store_id"),
        source=topic,
        attrs=attrs,
    )


async def _resolve(identifiers: dict[str, str]) -> str:
    """Redis is shared state: when it is away we wait for it rather than guess an identity."""
    delay = 0.1
    while True:
        try:
            member_id = await resolve_member(redis_client(settings), settings, identifiers)
            REDIS_UP.set(1)
            return member_id
        except RedisError as exc:
            REDIS_UP.set(0)
            logger.warning("Redis unavailable while resolving identity (%r); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ingest_record(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> None:
    EVENTS_IN.labels(topic).inc()
    result = validate(topic, value, now_ms(), settings.max_message_bytes)
    if not isinstance(result, Accepted):
        await dead_letter(topic, partition, offset, key, value, result.reason, result.message)
        return
    event = result.event
    identifiers = {k: str(getattr(event, k)) for k in KINDS if getattr(event, k, None)}
    member_id = await _resolve(identifiers)
    record = canonical(topic, event, member_id)
    await member_events_topic.send(key=member_id, value=record)
    EVENTS_FORWARDED.labels(topic, record.type).inc()


def _make_ingest_agent(topic_name: str, topic: faust.TopicT) -> None:
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async for ev in stream.events():
            msg = ev.message
            try:
                await ingest_record(topic_name, msg.partition, msg.offset, msg.key, msg.value)
            except Exception as exc:  # a bug must not stop the stream nor lose the record
                logger.exception(
                    "ingest failed on %s[%d]@%d", topic_name, msg.partition, msg.offset
                )
                await dead_letter(
                    topic_name,
                    msg.partition,
                    msg.offset,
                    msg.key,
                    msg.value,
                    "internal",
                    f"{type(exc).__name__}: {exc}"[:300],
                )

    ingest.__name__ = ingest.__qualname__ = f"ingest_{topic_name.replace('-', '_')}"
    app.agent(topic, name=f"storepulse.ingest.{topic_name}")(ingest)


for _name, _topic in INPUT_TOPICS.items():
    _make_ingest_agent(_name, _topic)
