"""What a trigger definition is: the pydantic model that validates YAML and the HTTP API alike."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from durations import Duration
from triggers.expr import compile_condition

CHANNELS = ("log", "push", "sms", "wechat", "email", "staff")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MessageAction(_Strict):
    type: Literal["message"]
    channel: Literal["log", "push", "sms", "wechat", "email"]
    template: str = Field(min_length=1, max_length=1000)


class CouponAction(_Strict):
    type: Literal["coupon"]
    pool: str = Field(min_length=1, max_length=64)
    channel: Literal["log", "push", "sms", "wechat", "email"] = "push"
    template: str = Field(default="You received a coupon: {coupon.code}", max_length=1000)


class StaffAlertAction(_Strict):
    type: Literal["staff_alert"]
    template: str = Field(min_length=1, max_length=1000)


ActionSpec = Annotated[MessageAction | CouponAction | StaffAlertAction, Field(discriminator="type")]


class When(_Strict):
    event: list[str] = Field(min_length=1, description="event types that can fire this trigger")

    @field_validator("event", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class Guardrails(_Strict):
    cooldown: Duration | None = Field(
        default=None, description="per member: no second fire of this trigger within this time"
    )
    max_event_age: Duration = Field(
        default="15m", description="events older than this (a replayed backlog) never fire"
    )


class TriggerDef(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    owner: str = ""
    enabled: bool = True
    priority: int = Field(default=100, ge=0, le=10_000)
    stores: list[str] = Field(default_factory=list, description="empty: every store")
    when: When
    if_: str = Field(default="", alias="if", max_length=2000)
    then: list[ActionSpec] = Field(min_length=1, max_length=10)
    guardrails: Guardrails = Field(default_factory=Guardrails)

    @field_validator("if_")
    @classmethod
    def _condition_compiles(cls, value: str) -> str:
        compile_condition(value)  # raises ExpressionError (a ValueError) with the column
        return value
