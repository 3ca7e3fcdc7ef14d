"""The input records StorePulse accepts, one pydantic model per input topic: pure (no faust), so
the edge validation, the JSON Schemas (`contracts/export.py`) and tools share them.

Undeclared fields are dropped at the edge (edge/validation.py) unless STOREPULSE_EXTRA_FIELDS keeps
them for the topic.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    history: bool = Field(
        default=False,
        description="a past record loaded by `storepulse import`: folded into member state "
        "without the age limit and without firing triggers",
    )


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
    """A link between a member and identifiers: app login, portal login, card binding, sign-up;
    or `unbind`: the identifiers it carries no longer belong to the member (a lost card, a
    reassigned phone), audited on identity-audit with `by`."""

    KINDS = ("app_login", "portal_login", "card_binding", "registration", "unbind")
    kind: Literal["app_login", "portal_login", "card_binding", "registration", "unbind"]
    member_id: IdStr
    by: IdStr | None = None
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


# Input topic (StorePulse name) -> the model its records must fit.
INPUT_SCHEMAS: dict[str, type[InputEvent]] = {
    "checkins": CheckIn,
    "wifi": WifiEvent,
    "beacons": BeaconEvent,
    "pos": PosEvent,
    "identity": IdentityEvent,
    "members": MemberProfile,
}
