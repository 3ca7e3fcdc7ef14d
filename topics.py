"""Every Kafka topic StorePulse uses, each with the schema of its records beside it.

Every topic on the hot path carries raw bytes: batch envelopes of orjson (contracts/batches.py),
decoded by the agent that reads them, so no decoding error can happen inside faust where it would
be logged and skipped. The rare audit records (identity conflicts, dead letters) are faust Records.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

import faust

from app import current
from contracts.topic_configs import topic_configs

app, settings = current()

# ---------------------------------------------------------------------------------------------
# Internal records
# ---------------------------------------------------------------------------------------------


# Records on the hot path are plain dicts serialised once with orjson and carried in batch
# envelopes (contracts/batches.py): {"events": [MemberEvent, ...]}, {"actions": [...]}, ...
# A faust Record cost a construction, a validation and a second serialisation per item.


class MemberEvent(TypedDict, total=False):
    """A canonical event about one member (or anonymous visitor), on the member's partition of
    member-events (and derived-events). Required: event_id, member_id, type, ts."""

    event_id: str
    member_id: str
    type: str
    ts: int
    store_id: str | None
    source: str
    attrs: dict[str, Any]


class Action(TypedDict):
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


class DeliveredCoupon(TypedDict):
    pool: str
    code: str


class Delivery(TypedDict):
    """The outcome of one action at its channel (`coupon`: the code it carried, if any)."""

    action_id: str
    trigger_id: str
    member_id: str
    channel: str
    outcome: Literal["sent", "suppressed", "failed"]
    reason: str
    event_ts: int
    fired_at: int
    delivered_at: int
    coupon: NotRequired[DeliveredCoupon]


class Binding(TypedDict):
    """`identity-bindings` (compacted, key `kind:value`, the value hashed where the kind is):
    the member an identifier is bound to. The source of truth of Redis's `id` keys."""

    member_id: str
    at: int
    source: str
    event_id: str


class CouponCode(TypedDict):
    """`coupon-codes` (compacted, key: the code): written and acknowledged before the pool is
    charged (`reserved`), again as `refused` when the pool had none left (with an empty
    `member_id`). The source of truth of the pools' issued counts in Redis."""

    code: str
    pool: str
    action_id: str
    trigger_id: str
    member_id: str
    channel: str
    status: Literal["reserved", "refused"]
    at: int


class IdentityConflict(faust.Record, serializer="orjson", include_metadata=False):
    """A link that was refused because the identifier already belongs to another member.

    Rule: the first binding wins; the existing member keeps its history. CRM resolves the
    conflict (e.g. a card re-issued) by unbinding first.
    """

    event_id: str
    source_topic: str
    identifier_kind: str
    identifier: str  # hashed where the kind is hashed (phone, mac)
    bound_member_id: str
    requested_member_id: str
    rule: str
    at: int


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
    redacted: bool = False  # phones / MACs in value_b64 were replaced by their keyed hash
    index: int | None = None  # the event's position in a batch envelope (value_b64: that event)


# ---------------------------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------------------------


def topic_name(name: str) -> str:
    """Kafka name of a StorePulse topic: `STOREPULSE_TOPIC_PREFIX` + name (environments, bench)."""
    return settings.topic_prefix + name


def _raw_topic(name: str) -> faust.TopicT:
    return app.topic(
        topic_name(name),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


checkins_topic = _raw_topic("checkins")
wifi_topic = _raw_topic("wifi")
beacons_topic = _raw_topic("beacons")
pos_topic = _raw_topic("pos")
identity_topic = _raw_topic("identity")
members_topic = _raw_topic("members")


# Internal hot-path topics carry batch envelopes as raw bytes, decoded by their agents: a record
# that does not decode goes to dead-letter (`not_decodable`) from there, with its position.
member_events_topic = _raw_topic("member-events")
derived_events_topic = _raw_topic("derived-events")
actions_topic = _raw_topic("actions")
deliveries_topic = _raw_topic("deliveries")
identity_bindings_topic = _raw_topic("identity-bindings")
coupon_codes_topic = _raw_topic("coupon-codes")
identity_audit_topic = app.topic(
    topic_name("identity-audit"),
    key_type=str,
    value_type=IdentityConflict,
    partitions=settings.partitions,
)
dead_letter_topic = app.topic(
    topic_name("dead-letter"), key_type=str, value_type=DeadLetter, partitions=settings.partitions
)

# Trigger definitions (key: trigger id, value: the definition as JSON, null: deleted). Read by
# every worker with its own consumer (triggers/registry.py), not by a faust agent.
TRIGGERS_TOPIC = topic_name("triggers")
# Every change to a trigger (triggers/lifecycle.py AuditRecord), key: trigger id, kept for good.
AUDIT_TOPIC = topic_name("trigger-audit")
# Member data rights carried out (web/members.py MemberAudit), key: the member's keyed hash.
MEMBER_AUDIT_TOPIC = topic_name("member-audit")


class MemberAudit(TypedDict):
    """An erasure, a consent change, an unbinding or an export of a member's data: who asked,
    when, for which member (keyed hash, never the id) and what was done."""

    change: Literal["erasure", "consent", "unbind_requested", "export"]
    member: str
    by: str
    at: int
    detail: dict[str, Any]


class DecisionRecord(TypedDict):
    """A trigger that fired or held a member out: the base of uplift (treated vs control)."""

    trigger_id: str
    member_id: str
    event_id: str
    verdict: str
    reason: str
    ts: int


decisions_topic = _raw_topic("decisions")

INPUT_TOPICS: dict[str, faust.TopicT] = {
    "checkins": checkins_topic,
    "wifi": wifi_topic,
    "beacons": beacons_topic,
    "pos": pos_topic,
    "identity": identity_topic,
    "members": members_topic,
}
# Every topic the worker creates when missing (Kafka names), with its topic-level configs.
TOPIC_CONFIGS = topic_configs(settings.topic_prefix, settings.retention_days)
