"""Trigger evaluation: a pure function of (triggers, event, member, store, clock) -> decisions.

The same function runs in the worker, in `POST /explain` and in backtests, so what an operator is
told about a decision is what the worker actually did.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from durations import duration_ms
from triggers.expr import Compiled, compile_condition, now_scope
from triggers.model import ActionSpec, TriggerDef

Verdict = Literal["fired", "suppressed", "not_matched"]


@dataclass(frozen=True)
class CompiledTrigger:
    definition: TriggerDef
    condition: Compiled
    cooldown_ms: int | None
    max_age_ms: int
    stores: frozenset[str]

    @classmethod
    def compile(cls, definition: TriggerDef) -> CompiledTrigger:
        g = definition.guardrails
        return cls(
            definition=definition,
            condition=compile_condition(definition.if_),
            cooldown_ms=duration_ms(g.cooldown) if g.cooldown else None,
            max_age_ms=duration_ms(g.max_event_age),
            stores=frozenset(definition.stores),
        )

    @property
    def id(self) -> str:
        return self.definition.id


@dataclass
class TriggerSet:
    """Enabled triggers indexed by event type, so cost follows the triggers that can match."""

    by_event: dict[str, list[CompiledTrigger]] = field(default_factory=dict)

    @classmethod
    def build(cls, definitions: Iterable[TriggerDef]) -> TriggerSet:
        index: dict[str, list[CompiledTrigger]] = {}
        for d in definitions:
            if not d.enabled:
                continue
            compiled = CompiledTrigger.compile(d)
            for event_type in d.when.event:
                index.setdefault(event_type, []).append(compiled)
        for candidates in index.values():
            candidates.sort(key=lambda t: (-t.definition.priority, t.id))
        return cls(index)

    def candidates(self, event_type: str) -> list[CompiledTrigger]:
        return self.by_event.get(event_type, [])

    def __len__(self) -> int:
        return len({t.id for ts in self.by_event.values() for t in ts})


@dataclass(frozen=True)
class Decision:
    trigger_id: str
    verdict: Verdict
    reason: str
    actions: tuple[dict[str, Any], ...] = ()


def evaluate(
    triggers: TriggerSet,
    event: Mapping[str, Any],
    member: Mapping[str, Any],
    store: Mapping[str, Any],
    now_ms: int,
    tz: ZoneInfo,
) -> list[Decision]:
    """Decide, for every candidate trigger, whether it fires for this member and event."""
    candidates = triggers.candidates(event["type"])
    if not candidates:
        return []
    scope = {"event": event, "member": member, "store": store, "now": now_scope(now_ms, tz)}
    fired_log: Mapping[str, Any] = member.get("fired") or {}
    decisions: list[Decision] = []
    for trigger in candidates:
        if trigger.stores and event.get("store_id") not in trigger.stores:
            decisions.append(Decision(trigger.id, "not_matched", "store"))
            continue
        if not trigger.condition(scope):
            decisions.append(Decision(trigger.id, "not_matched", "condition"))
            continue
        if now_ms - int(event["ts"]) > trigger.max_age_ms:
            decisions.append(Decision(trigger.id, "suppressed", "stale"))
            continue
        last = fired_log.get(trigger.id)
        if trigger.cooldown_ms is not None and last and now_ms - last[0] < trigger.cooldown_ms:
            decisions.append(Decision(trigger.id, "suppressed", "cooldown"))
            continue
        actions = tuple(
            build_action(trigger, spec, index, event, scope, now_ms)
            for index, spec in enumerate(trigger.definition.then)
        )
        decisions.append(Decision(trigger.id, "fired", "fired", actions))
    return decisions


def action_id(trigger_id: str, member_id: str, event_id: str, index: int) -> str:
    """Deterministic: a replay of the same event after a crash yields the same id."""
    digest = hashlib.sha256(f"{trigger_id}\x1f{member_id}\x1f{event_id}\x1f{index}".encode())
    return digest.hexdigest()[:32]


def build_action(
    trigger: CompiledTrigger,
    spec: ActionSpec,
    index: int,
    event: Mapping[str, Any],
    scope: Mapping[str, Any],
    now_ms: int,
) -> dict[str, Any]:
    channel = "staff" if spec.type == "staff_alert" else spec.channel
    payload: dict[str, Any] = {"text": render(spec.template, scope)}
    if spec.type == "coupon":
        payload["pool"] = spec.pool
    return {
        "action_id": action_id(trigger.id, event["member_id"], event["event_id"], index),
        "trigger_id": trigger.id,
        "member_id": event["member_id"],
        "kind": spec.type,
        "channel": channel,
        "payload": payload,
        "event_id": event["event_id"],
        "event_ts": int(event["ts"]),
        "fired_at": now_ms,
    }


_PLACEHOLDER = re.compile(r"\{(event|member|store|now)((?:\.[A-Za-z][A-Za-z0-9_]*)+)\}")


def render(template: str, scope: Mapping[str, Any]) -> str:
    """Fill `{member.first_name}`-style placeholders from plain dicts; nothing else is reachable."""

    def fill(match: re.Match[str]) -> str:
        value: Any = scope.get(match.group(1))
        for key in match.group(2)[1:].split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        return "" if value is None else str(value)[:200]

    return _PLACEHOLDER.sub(fill, template)
