"""Edge agents: validate, de-duplicate, hash personal identifiers, resolve the member, forward.

Every consumed record ends in exactly one place: member-events (forwarded), dead-letter (with a
reason), or dropped as a duplicate (counted). Raw phones and MACs never leave this module.
"""

from __future__ import annotations

import logging
import time

import faust

from agents.supervisor import supervised
from app import current
from contracts.inputs import IDENTIFIER_FIELDS, InputEvent
from core.metrics import (
    DUPLICATES,
    EVENTS_FORWARDED,
    EVENTS_IN,
    IDENTITY_CONFLICTS,
    IDENTITY_LINKS,
)
from edge.canonical import canonical, event_type
from edge.dead_letters import dead_letter
from edge.validation import Accepted, Limits, Rejected, validate_record
from state.dedup import first_seen
from state.identity import (
    Identifier,
    IdentityResolver,
    anonymous_id,
    identifiers_of,
    is_anonymous,
)
from state.redis_store import redis_client, with_redis
from topics import (
    INPUT_TOPICS,
    IdentityConflict,
    MemberEvent,
    identity_audit_topic,
    member_events_topic,
)

app, settings = current()

logger = logging.getLogger("storepulse.ingest")


def now_ms() -> int:
    return int(time.time() * 1000)


def links_identity(topic: str, event: InputEvent, member_id: str) -> bool:
    """Which events may bind identifiers to a member: those where the member proved who they are."""
    if is_anonymous(member_id):
        return False
    if topic == "wifi":
        return event.kind == "portal_login"
    return topic in ("checkins", "beacons", "pos", "identity")


class Ingest:
    """The per-record pipeline; one instance per worker process."""

    def __init__(self) -> None:
        self.resolver = IdentityResolver(redis_client(settings), settings)
        self.limits = Limits(
            settings.max_message_bytes, settings.max_batch_events, settings.max_batch_bytes
        )
        # parsed once: per record this was a split of STOREPULSE_EXTRA_FIELDS
        self.extra_fields = {t: settings.extra_fields_for(t) for t in INPUT_TOPICS}

    async def record(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        """One input record: one event, or a batch envelope of events judged one by one."""
        items = validate_record(
            topic,
            value,
            now_ms(),
            self.limits,
            self.extra_fields.get(topic, frozenset()),
            settings.hash_secret,
        )
        for item in items:
            EVENTS_IN.labels(topic).inc()
            result = item.result
            if isinstance(result, Accepted):
                position = f"{partition}:{offset}" + (
                    f":{item.index}" if item.index is not None else ""
                )
                try:
                    await self.event(topic, result.event, position)
                    continue
                except Exception as exc:  # this event only: its neighbours in a batch go on
                    logger.exception("ingest failed on %s[%d]@%s", topic, partition, position)
                    result = Rejected(
                        "internal",
                        f"ingest: {type(exc).__name__} in StorePulse; see the worker log at "
                        "this offset",
                    )
            await dead_letter(
                topic, partition, offset, key, item.raw, result.reason, result.message, item.index
            )

    async def event(self, topic: str, event: InputEvent, position: str) -> None:
        """De-duplicate (a re-read of the same position is not a duplicate), resolve, forward."""
        redis = redis_client(settings)
        fresh = await with_redis(
            lambda: first_seen(redis, settings, topic, event.event_id, position),
            "de-duplication",
        )
        if not fresh:
            DUPLICATES.labels(topic).inc()
            return
        fields = {f: getattr(event, f, None) for f in IDENTIFIER_FIELDS}
        idents = identifiers_of(fields, settings.hash_secret)
        bound: dict[Identifier, str] = {}
        if idents:
            resolution = await with_redis(lambda: self.resolver.resolve(idents), "identity")
            member_id, bound = resolution.member_id, resolution.bound
        else:
            member_id = f"guest-{getattr(event, 'store_id', 'unknown')}"  # a sale without member
        if links_identity(topic, event, member_id):
            await self._link(topic, event, member_id, idents, bound)
        await member_events_topic.send(
            key=member_id, value=MemberEvent(**canonical(topic, event, member_id, idents))
        )
        EVENTS_FORWARDED.labels(topic, event_type(topic, event.kind)).inc()

    async def _link(
        self,
        topic: str,
        event: InputEvent,
        member_id: str,
        idents: list[Identifier],
        bound: dict[Identifier, str],
    ) -> None:
        new, conflicts = await with_redis(
            lambda: self.resolver.link(member_id, idents, bound), "identity link"
        )
        for kind, value in new:
            IDENTITY_LINKS.labels(kind).inc()
            # The visitor may have history under its anonymous id: its partition hands it over.
            anon = anonymous_id(kind, value)
            await member_events_topic.send(
                key=anon,
                value=MemberEvent(
                    event_id=f"{event.event_id}:identified:{kind}",
                    member_id=anon,
                    type="identified",
                    ts=event.ts,
                    source=topic,
                    attrs={"member_id": member_id},
                ),
            )
        for (kind, value), owner in conflicts:
            IDENTITY_CONFLICTS.labels(topic, kind).inc()
            logger.warning(
                "identity conflict on %s: %s stays with its first member (event %s)",
                topic,
                kind,
                event.event_id,
            )
            await identity_audit_topic.send(
                key=owner,
                value=IdentityConflict(
                    event_id=event.event_id,
                    source_topic=topic,
                    identifier_kind=kind,
                    identifier=value,
                    bound_member_id=owner,
                    requested_member_id=member_id,
                    rule="first_binding_wins",
                    at=now_ms(),
                ),
            )


_ingest: Ingest | None = None


def _pipeline() -> Ingest:
    global _ingest
    if _ingest is None:
        _ingest = Ingest()
    return _ingest


def _make_ingest_agent(source: str, topic: faust.TopicT) -> None:
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        pipeline = _pipeline()
        async for ev in stream.events():
            msg = ev.message
            try:
                await pipeline.record(source, msg.partition, msg.offset, msg.key, msg.value)
            except Exception as exc:  # a bug must not stop the stream nor lose the record
                logger.exception("ingest failed on %s[%d]@%d", source, msg.partition, msg.offset)
                await dead_letter(
                    source,
                    msg.partition,
                    msg.offset,
                    msg.key,
                    msg.value,
                    "internal",
                    f"ingest: {type(exc).__name__} in StorePulse; see the worker log at this "
                    "offset",
                )

    ingest.__name__ = ingest.__qualname__ = f"ingest_{source}"
    app.agent(topic, name=f"storepulse.ingest.{source}")(supervised(f"ingest.{source}")(ingest))


for _name, _topic in INPUT_TOPICS.items():
    _make_ingest_agent(_name, _topic)
