"""What a fired trigger does: action records with deterministic ids and safely rendered text."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from core.durations import duration_ms
from triggers.model import ActionSpec, TriggerDef

INTERNAL = "internal"  # points and tags: applied to member state, not sent anywhere


def action_id(trigger_id: str, member_id: str, event_id: str, index: int) -> str:
    """Deterministic: a replay of the same event after a crash yields the same id."""
    digest = hashlib.sha256(f"{trigger_id}\x1f{member_id}\x1f{event_id}\x1f{index}".encode())
    return digest.hexdigest()[:32]


def channel_of(spec: ActionSpec) -> str:
    if spec.type in ("message", "coupon"):
        return spec.channel
    return "staff" if spec.type == "staff_alert" else INTERNAL


def customer_channels(specs: Iterable[ActionSpec]) -> list[str]:
    """Channels that reach the member (consent, quiet hours and caps apply to these)."""
    return sorted({spec.channel for spec in specs if spec.type in ("message", "coupon")})


def build_actions(
    d: TriggerDef, event: Mapping[str, Any], scope: Mapping[str, Any], now_ms: int
) -> tuple[dict[str, Any], ...]:
    member_id = scope["member"]["member_id"]
    # After this the message is stale: the dispatcher drops it (a backlog must not greet late).
    deliver_by = int(event["ts"]) + duration_ms(d.guardrails.max_event_age)
    actions = []
    for index, spec in enumerate(d.then):
        payload: dict[str, Any] = {}
        if spec.type == "coupon":
            payload = {
                "pool": spec.pool,
                "value": spec.value,
                "expires_at": now_ms + duration_ms(spec.expiry),
                "template": render(spec.template, scope),
            }  # {coupon.*} at dispatch
        elif spec.type in ("message", "staff_alert"):
            payload = {"text": render(spec.template, scope)}
            if spec.type == "staff_alert":
                payload["role"] = spec.role
                payload["store_id"] = event.get("store_id")
        elif spec.type == "points":
            payload = {"points": spec.points, "reason": spec.reason}
        elif spec.type == "tag":
            payload = {"add": list(spec.add), "remove": list(spec.remove)}
        if spec.type in ("message", "coupon", "staff_alert"):
            payload["deliver_by"] = deliver_by
        actions.append(
            {
                "action_id": action_id(d.id, member_id, event["event_id"], index),
                "trigger_id": d.id,
                "member_id": member_id,
                "kind": spec.type,
                "channel": channel_of(spec),
                "payload": payload,
                "event_id": event["event_id"],
                "event_ts": int(event["ts"]),
                "fired_at": now_ms,
            }
        )
    return tuple(actions)


_PLACEHOLDER = re.compile(r"\{(event|member|store|now|coupon)((?:\.[A-Za-z][A-Za-z0-9_]*)+)\}")


def render(template: str, scope: Mapping[str, Any]) -> str:
    """Fill `{member.first_name}`-style placeholders from plain dicts; nothing else is reachable."""

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in scope:
            return match.group(0)  # filled later (the coupon code is known at dispatch)
        value: Any = scope.get(match.group(1))
        for key in match.group(2)[1:].split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        return "" if value is None else str(value)[:200]

    return _PLACEHOLDER.sub(fill, template)
