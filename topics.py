"""Every Kafka topic StorePulse uses, each with the schema of its records beside it.

Input topics carry raw bytes: the ingest agent validates them itself, so no decoding error can
happen inside faust where it would be logged and skipped. Internal topics carry faust Records
serialised with orjson.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import faust
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app import app, settings

# ---------------------------------------------------------------------------------------------
# Input schemas (validated at the edge by agents/ingest.py; JSON Schema exported to schemas/)
# ---------------------------------------------------------------------------------------------

IdStr = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@\-]+$")]
DeviceId = Annotated[str, Field(min_length=1, max_length=128)]
Mac = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-Fa-f]{2}([:\-]?[0-9A-Fa-f]{2}){5}$",
        description="MAC address; replaced by a keyed hash at ingest",
    ),
]
Phone = Annotated[
    str,
    Field(
        pattern=r"^\+?[0-9][0-9 \-]{5,22}$",
        description="phone number; replaced by a keyed hash at ingest",
    ),
]
Rssi = Annotated[int, Field(ge=-120, le=0, description="signal strength, dBm")]
Money = Annotated[float, Field(ge=0, le=10_000_000)]

# Identifier fields an input may carry, in the order they are trusted to name a member.
IDENTIFIER_FIELDS = ("member_id", "member_card", "phone", "openid", "app_device_id", "mac")
HASHED_FIELDS = ("phone", "mac")


class InputEvent(BaseModel):
    """Fields every input event has. Undeclared fields are dropped at the edge (they may hold a
    raw phone or MAC), except those STOREPULSE_EXTRA_FIELDS keeps for the topic."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True, frozen=True)
    KINDS: ClassVar[tuple[str, ...]] = ()

    event_id: IdStr
    ts: int = Field(gt=0, description="event time, epoch milliseconds")
    kind: str


class CheckIn(InputEvent):
    """App / mini-program / QR check-in at a store."""

    KINDS = ("checkin",)
    kind: Literal["checkin"] = "checkin"
    store_id: IdStr
    member_id: IdStr | None = None
    app_device_id: DeviceId | None = None
    openid: DeviceId | None = None
    channel: Literal["app", "mini_program", "qr"] = "app"


class WifiEvent(InputEvent):
    """A probe, an association with an access point, or a captive-portal login (MAC + phone)."""

    KINDS = ("probe", "association", "portal_login")
    kind: Literal["probe", "association", "portal_login"]
    store_id: IdStr
    ap_id: IdStr
    mac: Mac
    rssi: Rssi
    zone_id: IdStr | None = None
    phone: Phone | None = None

    @model_validator(mode="after")
    def _portal_login_has_phone(self) -> WifiEvent:
        if self.kind == "portal_login" and not self.phone:
            raise ValueError("phone is required for a portal_login")
        return self


class BeaconEvent(InputEvent):
    """BLE enter / exit / ranging, seen by the member app."""

    KINDS = ("enter", "exit", "ranging")
    kind: Literal["enter", "exit", "ranging"]
    store_id: IdStr
    beacon_id: IdStr
    app_device_id: DeviceId
    rssi: Rssi
    zone_id: IdStr | None = None
    member_id: IdStr | None = None
    proximity: Literal["immediate", "near", "far", "unknown"] = "unknown"


class LineItem(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # undeclared fields are dropped
    sku: IdStr
    category: str = Field(default="", max_length=64)
    brand: str = Field(default="", max_length=64)
    qty: int = Field(ge=1, le=1000)
    price: Money


class PosEvent(InputEvent):
    """A sale or a refund at a till; a refund names the receipt it reverses."""

    KINDS = ("sale", "refund")
    kind: Literal["sale", "refund"]
    store_id: IdStr
    receipt_id: IdStr
    total: Money
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    items: list[LineItem] = Field(default_factory=list, max_length=500)
    coupons: list[IdStr] = Field(default_factory=list, max_length=20)
    member_id: IdStr | None = None
    member_card: IdStr | None = None
    phone: Phone | None = None
    original_receipt_id: IdStr | None = None

    @model_validator(mode="after")
    def _refund_names_its_sale(self) -> PosEvent:
        if self.kind == "refund" and not self.original_receipt_id:
            raise ValueError("original_receipt_id is required for a refund")
        return self


class IdentityEvent(InputEvent):
    """A link between a member and identifiers: app login, portal login, card binding, sign-up."""

    KINDS = ("app_login", "portal_login", "card_binding", "registration")
    kind: Literal["app_login", "portal_login", "card_binding", "registration"]
    member_id: IdStr
    member_card: IdStr | None = None
    phone: Phone | None = None
    openid: DeviceId | None = None
    app_device_id: DeviceId | None = None
    mac: Mac | None = None


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    push: bool = False
    sms: bool = False
    wechat: bool = False
    email: bool = False


class MemberProfile(InputEvent):
    """CRM master data of one member (the `members` topic is compacted by member id)."""

    KINDS = ("profile",)
    kind: Literal["profile"] = "profile"
    member_id: IdStr
    tier: str | None = Field(default=None, max_length=32)
    birthday: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    consent: Consent = Field(default_factory=Consent)
    tags: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=100)
    home_store: IdStr | None = None
    first_name: str | None = Field(default=None, max_length=64)


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


# ---------------------------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------------------------

INPUT_SCHEMAS: dict[str, type[InputEvent]] = {
    "checkins": CheckIn,
    "wifi": WifiEvent,
    "beacons": BeaconEvent,
    "pos": PosEvent,
    "identity": IdentityEvent,
    "members": MemberProfile,
}


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


class DeadLetteringTopic(faust.Topic):
    """A record faust cannot decode goes to `dead-letter` (reason `not_decodable`). faust's own
    handling acks it and throws the error into the agent: the agent crashed and the record was
    gone with nothing but a log line."""

    async def on_key_decode_error(self, exc: Exception, message: Any) -> None:
        await self._dead_letter(exc, message)

    async def on_value_decode_error(self, exc: Exception, message: Any) -> None:
        await self._dead_letter(exc, message)

    async def _dead_letter(self, exc: Exception, message: Any) -> None:
        from dead_letters import dead_letter  # dead_letters sends through this module's topics

        name = message.topic.removeprefix(settings.topic_prefix)
        await dead_letter(
            name,
            message.partition,
            message.offset,
            message.key,
            message.value,
            "not_decodable",
            f"{type(exc).__name__}: {str(exc)[:300]}",
        )


def _internal_topic(name: str, value_type: type[faust.Record]) -> faust.TopicT:
    return DeadLetteringTopic(
        app,
        topics=[topic_name(name)],
        key_type=str,
        value_type=value_type,
        partitions=settings.partitions,
    )


member_events_topic = _internal_topic("member-events", MemberEvent)
derived_events_topic = app.topic(
    topic_name("derived-events"),
    key_type=str,
    value_type=MemberEvent,
    partitions=settings.partitions,
)
actions_topic = _internal_topic("actions", Action)
deliveries_topic = app.topic(
    topic_name("deliveries"), key_type=str, value_type=Delivery, partitions=settings.partitions
)
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


class DecisionRecord(faust.Record, serializer="orjson", include_metadata=False):
    """A trigger that fired or held a member out: the base of uplift (treated vs control)."""

    trigger_id: str
    member_id: str
    event_id: str
    verdict: str
    reason: str
    ts: int


decisions_topic = app.topic(
    topic_name("decisions"),
    key_type=str,
    value_type=DecisionRecord,
    partitions=settings.partitions,
)

INPUT_TOPICS: dict[str, faust.TopicT] = {
    "checkins": checkins_topic,
    "wifi": wifi_topic,
    "beacons": beacons_topic,
    "pos": pos_topic,
    "identity": identity_topic,
    "members": members_topic,
}
# Every topic the worker creates when missing (Kafka names), with its topic-level configs.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    topic_name(name): configs
    for name, configs in {
        **{name: {} for name in INPUT_TOPICS},
        "members": {"cleanup.policy": "compact"},  # latest profile per member id
        "triggers": {"cleanup.policy": "compact"},  # latest definition per trigger id
        "member-events": {},
        "derived-events": {},
        "identity-audit": {},
        "decisions": {},
        "actions": {},
        "deliveries": {},
        "dead-letter": {"retention.ms": str(30 * 86_400_000)},  # a month to look and replay
    }.items()
}
