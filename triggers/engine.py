"""Trigger evaluation: a pure function of (triggers, event, member, store, clock) -> outcome.

The same functions run in the worker, in `POST /explain/{member}` and in tests, so what an
operator is told about a decision is what the worker does. Guardrails are checked in a fixed
order and the first that fails is the reason given.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from core.durations import duration_ms
from core.now import Now
from triggers.actions import action_id, build_actions, customer_channels, render

__all__ = ["action_id", "render"]  # part of the engine's interface
from triggers.expr import (
    Compiled,
    Threshold,
    compile_condition,
    meets_thresholds,
    member_prefilter,
    member_thresholds,
)
from triggers.model import TriggerDef

Verdict = Literal["fired", "suppressed", "not_matched", "held_out", "error"]
Caps = Mapping[str, tuple[int, int]]  # channel -> (per day, per week)
DEFAULT_CAPS: dict[str, tuple[int, int]] = {
    "push": (3, 10),
    "sms": (1, 3),
    "wechat": (2, 6),
    "email": (1, 5),
}


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def _range(text: str) -> tuple[int, int]:
    start, end = text.split("-")
    return _minutes(start), _minutes(end)


def in_range(minute: int, window: tuple[int, int]) -> bool:
    start, end = window
    return start <= minute < end if start <= end else minute >= start or minute < end


@dataclass(frozen=True)
class CompiledTrigger:
    definition: TriggerDef
    condition: Compiled
    cooldown_ms: int | None
    max_age_ms: int
    stores: frozenset[str]
    zones: frozenset[str]
    quiet: tuple[int, int] | None
    quiet_hold: bool  # quiet_mode `hold`: fire now, deliver when the quiet hours end
    hours: tuple[tuple[int, int], ...]
    days: frozenset[int]
    window_ms: int | None  # absence / sequence: within; delay: wait
    channels: frozenset[str]
    pattern: str
    # (member field, allowed values) the condition requires; checked before anything else.
    prefilter: tuple[str, frozenset[Any]] | None
    # (member field, ordering, number) conjuncts the condition requires; checked next.
    thresholds: tuple[Threshold, ...]
    # Read from the definition once: `_matches` runs for every candidate of every event.
    id: str
    priority: int
    targets_place: bool  # stores/zones to check against the event itself
    dwell: tuple[int | None, str | None, str | None] | None  # (ms, zone, category)
    sequence: bool  # `followed_by`: needs the armed first event
    group: str | None  # guardrails.group: one fired or held out per event among its triggers

    @classmethod
    def compile(cls, d: TriggerDef) -> CompiledTrigger:
        g, w = d.guardrails, d.when
        member_filtered = w.pattern == "event" and not d.zones
        within = (
            w.absent.within
            if w.absent
            else w.followed_by.within
            if w.followed_by
            else w.delay.wait
            if w.delay
            else None
        )
        return cls(
            definition=d,
            condition=compile_condition(d.if_),
            cooldown_ms=duration_ms(g.cooldown) if g.cooldown else None,
            max_age_ms=duration_ms(g.max_event_age),
            stores=frozenset(d.stores),
            zones=frozenset(d.zones),
            quiet=_range(g.quiet_hours) if g.quiet_hours else None,
            quiet_hold=g.quiet_mode == "hold",
            hours=tuple(_range(h) for h in d.schedule.hours),
            days=frozenset(d.schedule.days),
            window_ms=duration_ms(within) if within else None,
            channels=frozenset(customer_channels(d.then)),
            pattern=w.pattern,
            prefilter=member_prefilter(d.if_) if member_filtered else None,
            thresholds=member_thresholds(d.if_) if member_filtered else (),
            id=d.id,
            priority=d.priority,
            targets_place=w.pattern in ("event", "dwell") and bool(d.stores or d.zones),
            dwell=(d.dwell_ms(), w.dwell.zone, w.dwell.category) if w.dwell else None,
            sequence=w.followed_by is not None,
            group=g.group,
        )


def _lookup(by_value: Mapping[Any, list[CompiledTrigger]], value: Any) -> list[CompiledTrigger]:
    """Triggers whose prefilter allows `value`; a list or a map (`member.tags`) allows none."""
    try:
        return by_value.get(value, [])
    except TypeError:  # unhashable: equal to no constant
        return []


def guarded_decide(t: CompiledTrigger, *args: Any, **kwargs: Any) -> Decision:
    """`decide`, with any exception of this trigger (MemoryError and RecursionError included)
    turned into its `error` decision, so the event's other triggers and its state go on."""
    try:
        return decide(t, *args, **kwargs)
    except Exception as exc:
        return Decision(t.id, "error", type(exc).__name__)


def _by_priority(triggers: Iterable[CompiledTrigger]) -> list[CompiledTrigger]:
    return sorted(triggers, key=lambda t: (-t.priority, t.id))


@dataclass
class TriggerSet:
    """Enabled triggers indexed by event type and store: cost follows what can match."""

    fire: dict[tuple[str, str], list[CompiledTrigger]] = field(default_factory=dict)
    # Same lists split by prefilter: (always, {field: {value: triggers}}), for `for_member`.
    split: dict[
        tuple[str, str], tuple[list[CompiledTrigger], dict[str, dict[Any, list[CompiledTrigger]]]]
    ] = field(default_factory=dict)
    arm: dict[str, list[CompiledTrigger]] = field(default_factory=dict)
    cancel: dict[str, list[CompiledTrigger]] = field(default_factory=dict)
    by_id: dict[str, CompiledTrigger] = field(default_factory=dict)
    watched: set[str] = field(default_factory=set)  # event types any trigger cares about
    thresholds: bool = False  # does any trigger have member thresholds (`for_member` filters)
    # trigger id -> (within ms, min total, category, holdout share) of those with a goal
    goals: dict[str, tuple[int, float, str | None, float]] = field(default_factory=dict)
    caps: Caps = field(default_factory=lambda: dict(DEFAULT_CAPS))
    # trigger id -> how long a member's fire of it matters (cooldown, goal window), None: for
    # good (max_fires counts every fire): state.member_state.prune forgets the rest
    memory_ms: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        definitions: Iterable[TriggerDef],
        caps: Caps | None = None,
        compiled: dict[str, CompiledTrigger] | None = None,
    ) -> TriggerSet:
        """Index the enabled definitions. `compiled` carries the previous build's triggers: an
        unchanged definition is not parsed again (10,000 conditions take ~1.7 s to compile, and
        one edit should not stall every worker that long); it is updated in place."""
        tset = cls(caps=dict(DEFAULT_CAPS if caps is None else caps))
        cache = compiled if compiled is not None else {}
        for d in definitions:
            if not d.enabled:
                continue
            t = cache.get(d.id)
            if t is None or t.definition is not d:
                t = cache[d.id] = CompiledTrigger.compile(d)
            tset.by_id[t.id] = t
            tset.memory_ms[t.id] = (
                None
                if d.guardrails.max_fires is not None
                else max(t.cooldown_ms or 0, duration_ms(d.goal.within) if d.goal else 0)
            )
            if d.goal is not None:
                tset.goals[t.id] = (
                    duration_ms(d.goal.within),
                    d.goal.min_total,
                    d.goal.category,
                    d.guardrails.holdout,
                )
            for store in t.stores or {"*"}:
                for event_type in d.fire_events():
                    tset.fire.setdefault((event_type, store), []).append(t)
            for event_type in d.arm_events():
                tset.arm.setdefault(event_type, []).append(t)
            for event_type in d.cancel_events():
                tset.cancel.setdefault(event_type, []).append(t)
        for stale in set(cache) - set(tset.by_id):
            del cache[stale]
        tset.watched = {k[0] for k in tset.fire} | set(tset.arm) | set(tset.cancel)
        tset.thresholds = any(t.thresholds for t in tset.by_id.values())
        for (event_type, store), specific in list(tset.fire.items()):
            if store != "*":  # a store's list holds its own triggers and the chain-wide ones
                specific.extend(tset.fire.get((event_type, "*"), []))
        for index in (tset.fire, tset.arm, tset.cancel):
            for key in index:
                index[key] = _by_priority(index[key])  # type: ignore[index]
        for key, triggers in tset.fire.items():
            always: list[CompiledTrigger] = []
            by_field: dict[str, dict[Any, list[CompiledTrigger]]] = {}
            for t in triggers:  # already in priority order, and so is every list built here
                if t.prefilter is None:
                    always.append(t)
                else:
                    for value in t.prefilter[1]:
                        by_field.setdefault(t.prefilter[0], {}).setdefault(value, []).append(t)
            tset.split[key] = (always, by_field)
        return tset

    def candidates(self, event_type: str, store_id: str | None) -> list[CompiledTrigger]:
        """Every trigger an event of this type at this store may fire, in priority order
        (what /explain walks: it says why each one did not fire, prefilters included)."""
        found = self.fire.get((event_type, store_id or ""))
        return found if found is not None else self.fire.get((event_type, "*"), [])

    def for_member(
        self, event_type: str, store_id: str | None, member: Mapping[str, Any]
    ) -> list[CompiledTrigger]:
        """The candidates this member can match, in priority order: the prefilter and the
        thresholds pass (a trigger for gold members with 20 visits costs nothing when a pink
        member walks in); `candidates` is every one, for /explain."""
        key = (event_type, store_id or "")
        if key not in self.split:
            key = (event_type, "*")
        always, by_field = self.split.get(key, ([], {}))
        if not by_field:
            found = always
        else:
            chosen = [always] + [
                _lookup(by_value, member.get(f)) for f, by_value in by_field.items()
            ]
            lists = [lst for lst in chosen if lst]
            if len(lists) <= 1:
                found = lists[0] if lists else []
            else:
                found = list(heapq.merge(*lists, key=lambda t: (-t.priority, t.id)))
        if not self.thresholds:
            return found
        return [t for t in found if not t.thresholds or meets_thresholds(t.thresholds, member)]

    def watches(self, event_type: str) -> bool:
        return event_type in self.watched

    def dwell_thresholds_ms(self) -> frozenset[int]:
        return frozenset(t.definition.dwell_ms() or 0 for t in self.by_id.values()) - {0}

    def __len__(self) -> int:
        return len(self.by_id)


@dataclass(frozen=True)
class Decision:
    trigger_id: str
    verdict: Verdict
    reason: str
    actions: tuple[dict[str, Any], ...] = ()


@dataclass
class Outcome:
    """Decisions, plus the pending patterns to start (`arm`) or drop (`disarm`)."""

    decisions: list[Decision] = field(default_factory=list)
    arm: dict[str, dict[str, Any]] = field(default_factory=dict)
    disarm: list[str] = field(default_factory=list)

    @property
    def fired(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == "fired"]


def holdout(member_id: str, trigger_id: str, share: float) -> bool:
    """Deterministic control group: the same member is always in or out for a trigger."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"holdout\x1f{trigger_id}\x1f{member_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def sends_so_far(member: Mapping[str, Any], channel: str, now: Now) -> tuple[int, int]:
    """Messages this member got on `channel` today and this week (all triggers together)."""
    entry = (member.get("sent") or {}).get(channel)
    if not entry:
        return 0, 0
    e_day, n_day, e_week, n_week = entry
    return (n_day if e_day == now.day else 0), (n_week if e_week == now.week else 0)


def _guardrail(
    t: CompiledTrigger,
    event: Mapping[str, Any],
    member: Mapping[str, Any],
    now: Now,
) -> str | None:
    """The first guardrail that stops this trigger now, or None."""
    d = t.definition
    s = d.schedule
    now_ms, local = now.ms, now.local
    if (s.start and now_ms < _ms(s.start, now.tz)) or (s.end and now_ms >= _ms(s.end, now.tz)):
        return "schedule"
    minute = now.minute
    if (t.days and local.isoweekday() not in t.days) or (
        t.hours and not any(in_range(minute, h) for h in t.hours)
    ):
        return "schedule"
    if now_ms - int(event["ts"]) > t.max_age_ms:
        return "stale"
    last_ts, count = (member.get("fired") or {}).get(t.id, (0, 0))
    if d.guardrails.max_fires is not None and count >= d.guardrails.max_fires:
        return "max_fires"
    if t.cooldown_ms is not None and last_ts and now_ms - last_ts < t.cooldown_ms:
        return "cooldown"
    return None


HELD = "held_quiet_hours"  # the reason of a decision that fired and waits for quiet hours


def quiet_end_ms(now: Now, window: tuple[int, int]) -> int:
    """When the quiet hours `now` falls in end (the next local time at their end minute)."""
    end = window[1]
    ahead = (end - now.minute) % 1440 or 1440
    return now.ms - now.local.second * 1000 - now.local.microsecond // 1000 + ahead * 60_000


def _reach(
    t: CompiledTrigger,
    member: Mapping[str, Any],
    now: Now,
    caps: Caps,
    just_sent: Mapping[str, int],
    event_ts: int = 0,
) -> str | None:
    """Guardrails of customer contact: consent, frequency caps, quiet hours (last: a held
    message still needs consent and a cap slot). `hold:<ms>`: fire, deliver at <ms>."""
    if not t.channels:
        return None
    consent = member.get("consent") or {}
    for channel in t.channels:
        if channel != "log" and not consent.get(channel):
            return "consent"
        per_day, per_week = caps.get(channel, (10**6, 10**6))
        n_day, n_week = sends_so_far(member, channel, now)
        extra = just_sent.get(channel, 0)  # fired earlier for this same event
        if n_day + extra >= per_day or n_week + extra >= per_week:
            return "frequency_cap"
    if t.quiet and in_range(now.minute, t.quiet):
        if not t.quiet_hold:
            return "quiet_hours"
        until = quiet_end_ms(now, t.quiet)
        if until - event_ts > t.max_age_ms:
            return "quiet_hours"  # stale by the time they end: dropped, as a backlog would be
        return f"hold:{until}"
    return None


def _ms(value: datetime, tz: ZoneInfo) -> int:
    aware = value if value.tzinfo else value.replace(tzinfo=tz)
    return int(aware.timestamp() * 1000)


def _matches(
    t: CompiledTrigger,
    event: Mapping[str, Any],
    member: Mapping[str, Any],
    scope: Mapping[str, Any],
) -> str | None:
    """Why this trigger does not apply to this event (targeting, pattern, condition), or None."""
    if t.targets_place:  # event and dwell patterns; the others target their first event
        if t.stores and event.get("store_id") not in t.stores:
            return "store"
        zone = event.get("zone_id") or member.get("zone_id")
        if t.zones and zone not in t.zones:
            return "zone"
    if t.dwell is not None:
        at_least, zone, category = t.dwell
        if (
            event.get("dwell_ms") != at_least
            or (zone and event.get("zone_id") != zone)
            or (category and event.get("zone_category") != category)
        ):
            return "dwell"
    if t.sequence:
        armed = (member.get("armed") or {}).get(t.id)
        if not armed or int(event["ts"]) - armed["ts"] > (t.window_ms or 0):
            return "no_prior_event"
    if not t.condition(scope):
        return "condition"
    return None


def event_context(
    event: Mapping[str, Any],
    member: Mapping[str, Any],
    store: Mapping[str, Any],
    now: Now,
) -> dict[str, Any]:
    """What conditions and templates see."""
    return {"event": event, "member": member, "store": store, "now": now.scope}


def decide(
    t: CompiledTrigger,
    event: Mapping[str, Any],
    member: Mapping[str, Any],
    store: Mapping[str, Any],
    now: Now,
    caps: Caps,
    just_sent: Mapping[str, int] | None = None,
    scope: Mapping[str, Any] | None = None,
) -> Decision:
    """One trigger, one event: the verdict and its reason (the explainable unit).

    `scope` may be passed in when many triggers are decided for the same event (built once)."""
    if scope is None:
        scope = event_context(event, member, store, now)
    miss = _matches(t, event, member, scope)
    if miss:
        return Decision(t.id, "not_matched", miss)
    stop = _guardrail(t, event, member, now)
    if stop:
        return Decision(t.id, "suppressed", stop)
    if holdout(member["member_id"], t.id, t.definition.guardrails.holdout):
        return Decision(t.id, "held_out", "control_group")
    stop = _reach(t, member, now, caps, just_sent or {}, int(event["ts"]))
    if stop and stop.startswith("hold:"):
        actions = build_actions(t.definition, event, scope, now.ms)
        until = int(stop[5:])
        for a in actions:
            if a["channel"] in t.channels:
                a["payload"]["not_before"] = until
        return Decision(t.id, "fired", HELD, actions)
    if stop:
        return Decision(t.id, "suppressed", stop)
    return Decision(t.id, "fired", "fired", build_actions(t.definition, event, scope, now.ms))


def evaluate(
    triggers: TriggerSet,
    event: Mapping[str, Any],
    member: Mapping[str, Any],
    store: Mapping[str, Any],
    now: Now,
    explain: bool = False,
) -> Outcome:
    """Everything one event means for one member's triggers.

    The worker skips candidates the member certainly fails (prefilter, thresholds) without a
    decision; `explain` decides every candidate instead, so /explain also says `not_matched:
    condition` for them. What fires is the same either way."""
    out = Outcome()
    kind = event["type"]
    pending = member.get("pending") or {}
    for t in triggers.cancel.get(kind, ()):
        if t.id in pending:
            out.disarm.append(t.id)
            out.decisions.append(Decision(t.id, "not_matched", "cancelled"))
    groups: set[str] = set()
    just_sent: dict[str, int] = {}
    scope = event_context(event, member, store, now)
    candidates = (
        triggers.candidates(kind, event.get("store_id"))
        if explain
        else triggers.for_member(kind, event.get("store_id"), member)
    )
    for t in candidates:
        decision = guarded_decide(t, event, member, store, now, triggers.caps, just_sent, scope)
        group = t.group
        if decision.verdict in ("fired", "held_out") and group:
            if group in groups:
                decision = Decision(t.id, "suppressed", "group")
            groups.add(group)
        if decision.verdict == "fired":
            for channel in t.channels:
                just_sent[channel] = just_sent.get(channel, 0) + 1
        if t.sequence and decision.reason != "no_prior_event":
            out.disarm.append(t.id)  # a sequence completes once
        out.decisions.append(decision)
    for t in triggers.arm.get(kind, ()):
        if (t.stores and event.get("store_id") not in t.stores) or (
            t.zones and event.get("zone_id") not in t.zones
        ):
            continue
        entry = {
            "ts": int(event["ts"]),
            "event_id": event["event_id"],
            "type": kind,
            "store_id": event.get("store_id"),
            "zone_id": event.get("zone_id"),
        }
        if not t.definition.when.followed_by:
            entry["due"] = int(event["ts"]) + (t.window_ms or 0)
        out.arm[t.id] = entry
    return out


def evaluate_due(
    triggers: TriggerSet,
    member: Mapping[str, Any],
    store: Mapping[str, Any],
    now: Now,
) -> Outcome:
    """Absence and delay patterns whose time has come (called on timer events)."""
    now_ms = now.ms
    out = Outcome()
    for trigger_id, entry in sorted((member.get("pending") or {}).items()):
        if entry["due"] > now_ms:
            continue
        out.disarm.append(trigger_id)
        t = triggers.by_id.get(trigger_id)
        if t is None:
            continue  # the trigger was disabled or deleted meanwhile
        event = {
            **entry,
            "event_id": f"{entry['event_id']}:{trigger_id}:due",
            "type": f"{entry['type']}+{t.definition.when.pattern}",
            "ts": entry["due"],
            "started_at": entry["ts"],
            "member_id": member["member_id"],
        }
        out.decisions.append(guarded_decide(t, event, member, store, now, triggers.caps))
    return out
