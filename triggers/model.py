"""What a trigger definition is: the pydantic model that validates YAML and the HTTP API alike.

`schemas/trigger.schema.json` is generated from this model (`storepulse schemas export`).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.durations import Duration, duration_ms
from triggers.catalog import EVENT_TYPES, event_fields, nearest, references_of, roots
from triggers.expr import compile_condition

MessageChannel = Literal["log", "push", "sms", "wechat", "email"]


def _listify(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _known_types(types: list[str]) -> list[str]:
    for t in types:
        if t not in EVENT_TYPES:
            raise ValueError(
                f"unknown event type {t[:40]!r}{nearest(t, EVENT_TYPES)}; "
                f"one of {', '.join(sorted(EVENT_TYPES))}"
            )
    return types


# One event type or a list of them.
EventTypes = Annotated[
    list[str],
    BeforeValidator(_listify),
    Field(min_length=1, max_length=20),
    AfterValidator(_known_types),
]
OptionalEventTypes = Annotated[
    list[str], BeforeValidator(_listify), Field(max_length=20), AfterValidator(_known_types)
]
ShortText = Annotated[str, Field(max_length=64)]
# Schedules within this century: anything else is a typo, and stays within int64 milliseconds.
Moment = Annotated[datetime, Field(ge=datetime(2000, 1, 1), le=datetime(2100, 1, 1))]
_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MessageAction(_Strict):
    """Send a message; `{member.first_name}`-style placeholders are filled from plain data."""

    type: Literal["message"]
    channel: MessageChannel
    template: str = Field(min_length=1, max_length=1000)


class CouponAction(_Strict):
    """Issue a unique code from a pool (budgeted in Redis) and tell the member on a channel."""

    type: Literal["coupon"]
    pool: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    value: float = Field(gt=0, le=100_000, description="face value, in the programme currency")
    expiry: Duration = Field(default="7d", description="valid for this long after issue")
    channel: MessageChannel = "push"
    template: str = Field(
        default="A coupon for you: {coupon.value} off, code {coupon.code}", max_length=1000
    )

    @field_validator("pool")
    @classmethod
    def _pool_configured(cls, value: str, info: ValidationInfo) -> str:
        refs = references_of(info.context)
        if refs is not None and value not in refs.pools:
            raise ValueError(
                f"no coupon pool {value!r}{nearest(value, refs.pools)}; "
                f"configured: {', '.join(sorted(refs.pools)) or 'none'}"
            )
        return value


class PointsAction(_Strict):
    type: Literal["points"]
    points: int = Field(ge=-1_000_000, le=1_000_000, description="awarded (or taken) points")
    reason: str = Field(default="", max_length=200)


class TagAction(_Strict):
    type: Literal["tag"]
    add: list[ShortText] = Field(default_factory=list, max_length=10)
    remove: list[ShortText] = Field(default_factory=list, max_length=10)


class StaffAlertAction(_Strict):
    """Alert store staff (e.g. a shopping advisor); internal, so no consent or caps apply."""

    type: Literal["staff_alert"]
    template: str = Field(min_length=1, max_length=1000)
    role: str = Field(default="advisor", max_length=64)


ActionSpec = Annotated[
    MessageAction | CouponAction | PointsAction | TagAction | StaffAlertAction,
    Field(discriminator="type"),
]


class Dwell(_Strict):
    """In a zone (by id or category) for at least `at_least`."""

    zone: ShortText | None = None
    category: ShortText | None = None
    at_least: Duration


class Absence(_Strict):
    """After the `when` event, no `event` within `within`: fires when `within` has passed."""

    event: EventTypes
    within: Duration


class Sequence(_Strict):
    """The `when` event followed by `event` within `within`: fires on that second event."""

    event: EventTypes
    within: Duration


class Delay(_Strict):
    """Act `wait` after the `when` event, unless one of `unless` happens first."""

    wait: Duration
    unless: OptionalEventTypes = Field(default_factory=list)


class When(_Strict):
    event: OptionalEventTypes = Field(
        default_factory=list, description="event types that fire (or start) this trigger"
    )
    dwell: Dwell | None = None
    absent: Absence | None = None
    followed_by: Sequence | None = None
    delay: Delay | None = None

    @model_validator(mode="after")
    def _one_pattern(self) -> When:
        patterns = [p for p in (self.dwell, self.absent, self.followed_by, self.delay) if p]
        if len(patterns) > 1:
            raise ValueError("use at most one of dwell, absent, followed_by, delay")
        if not self.event and not self.dwell:
            raise ValueError("give `event` (or a `dwell` pattern)")
        if self.dwell and self.event:
            raise ValueError("a dwell trigger fires on zone_dwell; leave `event` out")
        return self

    @property
    def pattern(self) -> str:
        for name in ("dwell", "absent", "followed_by", "delay"):
            if getattr(self, name):
                return name
        return "event"


class Schedule(_Strict):
    """When the trigger may fire, in the store's local time."""

    start: Moment | None = None
    end: Moment | None = None
    days: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        default_factory=list, description="ISO weekdays, 1 = Monday; empty: every day"
    )
    hours: list[str] = Field(
        default_factory=list, max_length=24, description='e.g. ["11:00-14:00"]'
    )

    @field_validator("hours")
    @classmethod
    def _hour_ranges(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _HOURS.match(item):
                raise ValueError(f"{item!r} is not a range like 11:00-14:00")
        return value


class Guardrails(_Strict):
    cooldown: Duration | None = Field(
        default=None, description="per member: no second fire of this trigger within this time"
    )
    max_fires: int | None = Field(default=None, ge=1, le=1_000_000, description="per member, ever")
    max_event_age: Duration = Field(
        default="15m", description="events older than this (a replayed backlog) never fire"
    )
    quiet_hours: str | None = Field(
        default="22:00-08:00", description="store-local; messages are not sent then (null: none)"
    )
    quiet_mode: Literal["hold", "drop"] = Field(
        default="hold",
        description="in quiet hours: hold the message until they end (dropped if the event is "
        "older than max_event_age by then), or drop it",
    )
    holdout: float = Field(
        default=0.0, ge=0, le=0.5, description="share of members held out as a control group"
    )
    group: str | None = Field(
        default=None,
        max_length=64,
        description="only the highest-priority trigger of a group fires",
    )

    @field_validator("quiet_hours")
    @classmethod
    def _range(cls, value: str | None) -> str | None:
        if value is not None and not _HOURS.match(value):
            raise ValueError(f"{value!r} is not a range like 22:00-08:00")
        return value


class Goal(_Strict):
    """What counts as a conversion of this trigger: a purchase within `within` of its last fire
    (or hold-out: the control group converts too), of at least `min_total`, optionally with an
    item of `category`."""

    event: Literal["purchase"] = "purchase"
    within: Duration = Field(default="7d", description="after the fire")
    min_total: float = Field(default=0, ge=0, le=10_000_000)
    category: ShortText | None = None


class TriggerDef(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    owner: str = Field(default="", max_length=200)
    enabled: bool = True
    priority: int = Field(default=100, ge=0, le=10_000)
    schedule: Schedule = Field(default_factory=Schedule)
    stores: list[ShortText] = Field(
        default_factory=list, max_length=1000, description="empty: every store"
    )
    zones: list[ShortText] = Field(
        default_factory=list, max_length=100, description="empty: any zone"
    )
    when: When
    if_: str = Field(default="", alias="if", max_length=1000)
    then: list[ActionSpec] = Field(min_length=1, max_length=10)
    guardrails: Guardrails = Field(default_factory=Guardrails)
    goal: Goal | None = Field(default=None, description="conversion goal for the report")

    @field_validator("stores", "zones")
    @classmethod
    def _places_known(cls, value: list[str], info: ValidationInfo) -> list[str]:
        refs = references_of(info.context)
        known = None if refs is None else refs.stores if info.field_name == "stores" else refs.zones
        for item in value:
            if known is not None and item not in known:
                what = "store" if info.field_name == "stores" else "zone"
                raise ValueError(f"the store registry has no {what} {item!r}{nearest(item, known)}")
        return value

    @field_validator("if_")
    @classmethod
    def _condition_compiles(cls, value: str, info: ValidationInfo) -> str:
        """Compiled with the fields of the events this trigger sees, so that a misspelt or
        mistyped field is refused here (ExpressionError is a ValueError naming the column)."""
        when = info.data.get("when")
        if when is None:
            compile_condition(value)  # `when` is invalid itself: cost limits only
            return value
        refs = references_of(info.context)
        extra = refs.extra_event_fields if refs else ()
        if when.absent or when.delay:
            fields = event_fields(when.event, due=True, extra=extra)
        elif when.dwell:
            fields = event_fields(["zone_dwell"], extra=extra)
        elif when.followed_by:
            fields = event_fields(when.followed_by.event, extra=extra)
        else:
            fields = event_fields(when.event, extra=extra)
        compile_condition(value, roots(fields))
        return value

    def fire_events(self) -> list[str]:
        """Event types on which this trigger can fire (the index of the engine)."""
        w = self.when
        if w.dwell:
            return ["zone_dwell"]
        if w.followed_by:
            return list(w.followed_by.event)
        if w.absent or w.delay:
            return []  # fired by the timer only
        return list(w.event)

    def arm_events(self) -> list[str]:
        """Event types that start a pending pattern (absence, sequence, delay)."""
        return (
            list(self.when.event) if self.when.pattern in ("absent", "followed_by", "delay") else []
        )

    def cancel_events(self) -> list[str]:
        w = self.when
        return list(w.absent.event) if w.absent else list(w.delay.unless) if w.delay else []

    def dwell_ms(self) -> int | None:
        return duration_ms(self.when.dwell.at_least) if self.when.dwell else None
