"""Input record -> canonical member event: the one shape the member agent folds.

Pure and kept apart from the edge agent, so that tools (the benchmark's bulk loader) build exactly
what the edge sends without a faust App.
"""

from __future__ import annotations

from typing import Any, TypedDict

from contracts.inputs import IDENTIFIER_FIELDS, InputEvent
from state.identity import Identifier

_NOT_ATTRS = {"event_id", "ts", "kind", "store_id", *IDENTIFIER_FIELDS}
# (topic, kind) -> canonical event type on member-events; other kinds keep the topic's noun.
_TYPES = {
    ("pos", "sale"): "purchase",
    ("pos", "refund"): "refund",
    ("checkins", "checkin"): "checkin",
    ("members", "profile"): "profile",
}
_NOUN = {"wifi": "wifi", "beacons": "beacon", "identity": "identity"}


def event_type(topic: str, kind: str) -> str:
    return _TYPES.get((topic, kind)) or _NOUN[topic]


class Canonical(TypedDict):
    """The fields of a member-events record (topics.MemberEvent is its faust Record)."""

    event_id: str
    member_id: str
    type: str
    ts: int
    store_id: str | None
    source: str
    attrs: dict[str, Any]


def canonical(topic: str, event: InputEvent, member_id: str, idents: list[Identifier]) -> Canonical:
    # A CRM profile updates the fields it carries and only those (a null clears one); other
    # inputs give their defaults (a check-in's channel, a sale's currency) to conditions.
    data: dict[str, Any] = (
        event.model_dump(exclude_unset=True, mode="json")
        if topic == "members"
        else event.model_dump(exclude_none=True, mode="json")
    )
    attrs = {k: v for k, v in data.items() if k not in _NOT_ATTRS}
    if not attrs.get("history"):
        attrs.pop("history", None)  # only history records carry it
    attrs["kind"] = event.kind
    attrs["identified_by"] = idents[0][0] if idents else "none"
    return Canonical(
        event_id=event.event_id,
        member_id=member_id,
        type=event_type(topic, event.kind),
        ts=event.ts,
        store_id=data.get("store_id"),
        source=topic,
        attrs=attrs,
    )
