"""Every Kafka topic StorePulse uses, each with the schema of its records beside it.

Input topics carry raw bytes: the ingest agent validates them itself, so no decoding error can
happen inside faust where it would be logged and skipped. Internal topics carry faust Records
serialised with orjson.
"""

from __future__ import annotations

from typing import Any, Literal

import faust
from pydantic import BaseModel, ConfigDict, Field

from app import app, settings

# ---------------------------------------------------------------------------------------------
# Input schemas (validated at the edge by agents/ingest.py; JSON Schema exported to schemas/)
# ---------------------------------------------------------------------------------------------

Id = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@\-]+$")


class InputEvent(BaseModel):
    """Fields every input event has. Unknown extra fields are kept: producers evolve."""

    model_config = ConfigDict(extra="allow", strict=False, str_strip_whitespace=True)

    event_id: str = Id
    ts: int = Field(description="event time, epoch milliseconds", gt=0)


class CheckIn(InputEvent):
    """App / mini-program / QR check-in at a store; at least one identifier is required."""

    kind: Literal["checkin"] = "checkin"
    store_id: str = Id
    member_id: str | None = Field(default=None, min_length=1, max_length=64)
    app_device_id: str | None = Field(default=None, min_length=1, max_length=128)
    openid: str | None = Field(default=None, min_length=1, max_length=128)
    channel: Literal["app", "mini_program", "qr"] = "app"


# ---------------------------------------------------------------------------------------------
# Internal records
# ---------------------------------------------------------------------------------------------


class MemberEvent(faust.Record, serializer="orjson", include_metadata=False):
    """A canonical event about one member (or anonymous visitor), keyed by `member_id`."""

    event_id: str
    member_id: str
    type: str
    ts: int
    store_id: str | None = None
    source: str = ""
    attrs: dict[str, Any] = {}


class Action(faust.Record, serializer="orjson", include_metadata=False):
    """Something a trigger decided to do for a member; `action_id` is deterministic."""

    action_id: str
    trigger_id: str
    member_id: str
    kind: str
    channel: str
    payload: dict[str, Any]
    event_id: str
    event_ts: int
    fired_at: int


class Delivery(faust.Record, serializer="orjson", include_metadata=False):
    """The outcome of one action at its channel."""

    action_id: str
    trigger_id: str
    member_id: str
    channel: str
    outcome: Literal["sent", "suppressed", "failed"]
    reason: str
    event_ts: int
    fired_at: int
    delivered_at: int


class DeadLetter(faust.Record, serializer="orjson", include_metadata=False):
    """A record StorePulse could not accept, with everything needed to replay it."""

    source_topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str
    reason: str
    message: str
    at: int


# ---------------------------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------------------------

INPUT_SCHEMAS: dict[str, type[InputEvent]] = {"checkins": CheckIn}


def _raw_topic(name: str) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


checkins_topic = _raw_topic("checkins")

member_events_topic = app.topic(
    "member-events", key_type=str, value_type=MemberEvent, partitions=settings.partitions
)
actions_topic = app.topic(
    "actions", key_type=str, value_type=Action, partitions=settings.partitions
)
deliveries_topic = app.topic(
    "deliveries", key_type=str, value_type=Delivery, partitions=settings.partitions
)
dead_letter_topic = app.topic(
    "dead-letter", key_type=str, value_type=DeadLetter, partitions=settings.partitions
)

INPUT_TOPICS: dict[str, faust.TopicT] = {"checkins": checkins_topic}
# Every topic the worker creates when missing, with its topic-level configs.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    **{name: {} for name in INPUT_TOPICS},
    "member-events": {},
    "actions": {},
    "deliveries": {},
    "dead-letter": {"retention.ms": str(30 * 86_400_000)},  # a month to look and replay
}
