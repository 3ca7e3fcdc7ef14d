"""The per-member record and the pure function that folds any event into it.

A record is a plain dict (stored with orjson), kept small: counters, the current visit, spend
buckets and the few timestamps triggers ask about, never raw event history.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from core.now import Now
from state.loyalty import Loyalty
from state.presence import Derived, advance, apply_sighting, next_due, sighting_of
from state.purchases import (
    RECEIPTS_KEPT,
    SETTLED_KEPT,
    apply_purchase,
    refresh_growth,
    retier,
    rfm,
)
from state.records import MemberRecord, as_record
from state.stores import DEFAULT_STORE, Store

SIGHTINGS = ("checkin", "wifi", "beacon", "purchase", "refund")  # a till sees who is there


@dataclass(frozen=True)
class StateContext:
    """Configuration the fold needs: the store registry and the loyalty programme."""

    stores: Mapping[str, Store]
    loyalty: Loyalty
    extra_dwell_ms: frozenset[int] = frozenset()  # dwell thresholds that triggers ask for
    # (pool, action id) -> the coupon code dispatch will issue (triggers/attribution.py)
    coupon_code: Callable[[str, str], str | None] | None = None

    def store(self, store_id: str | None) -> Store:
        return self.stores.get(store_id or "", DEFAULT_STORE)


def new_member(member_id: str) -> MemberRecord:
    return {
        "member_id": member_id,
        "anonymous": member_id.startswith("anon-"),
        "visits": 0,
        "first_visit_ts": None,
        "last_visit_ts": None,
        "prev_visit_ts": None,
        "visits_by_store": {},
        "presence": None,
        "checkins_today": 0,
        "checkin_day": None,
        "points": 0,
        "growth": 0.0,
        "fired": {},
    }


def local_day(ts_ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz).date().isoformat()


def _copy(record: Mapping[str, Any] | None, member_id: str) -> MemberRecord:
    state = as_record(record) if record else new_member(member_id)
    presence = state.get("presence")
    if presence:
        state["presence"] = {**presence, "zone_ms": dict(presence["zone_ms"])}
    return state


def apply_event(
    record: Mapping[str, Any] | None, event: Mapping[str, Any], ctx: StateContext
) -> tuple[MemberRecord, list[Derived], dict[str, Any]]:
    """Return (record after `event`, derived events in time order, extra fields for the event).

    The input record is not modified. `timer` events carry the current time and only advance
    the clock (visit ends and dwell thresholds).
    """
    state = _copy(record, event["member_id"])
    kind, ts = event["type"], int(event["ts"])
    store = ctx.store(event.get("store_id"))
    derived: list[Derived] = []
    extra: dict[str, Any] = {}
    if kind not in ("purchase", "refund"):  # those recompute growth themselves
        derived += refresh_growth(state, ctx.loyalty, ts, store.tz)
    if kind == "timer":
        return state, derived + advance(state, ts, ctx.stores, ctx.extra_dwell_ms), extra
    if kind in SIGHTINGS:
        sighting = sighting_of(
            {**event, "type": "checkin"} if kind in ("purchase", "refund") else event, store
        )
        derived += (
            apply_sighting(state, sighting, ctx.stores, ctx.extra_dwell_ms)
            if sighting
            else advance(state, ts, ctx.stores, ctx.extra_dwell_ms)
        )
    if kind == "checkin":
        day = local_day(ts, store.tz)
        state["checkins_today"] = state["checkins_today"] + 1 if state["checkin_day"] == day else 1
        state["checkin_day"] = day
    elif kind in ("purchase", "refund"):
        more, extra = apply_purchase(state, event, ctx.loyalty, store.tz)
        derived += more
    elif kind == "profile":
        _apply_profile(state, event)
    elif kind == "consent":
        set_consent(
            state,
            str(event["channel"]),
            bool(event["granted"]),
            int(event.get("at") or ts),
            str(event.get("source") or "api"),
        )
    state["last_seen_ts"] = max(ts, state.get("last_seen_ts") or 0)
    return state, derived, extra


RECENT_EVENTS = 16  # replays arrive within the uncommitted window: seconds, a few events
RECENT_OUTPUTS = 2


def _event_hash(event_id: str) -> int:
    """48 bits: a member's 16 recent ids collide with a new one once in ~10^13 events."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=6).digest(), "big")


def replayed_actions(record: Mapping[str, Any] | None, event_id: str) -> list[dict] | None:
    """None if `event_id` is new to this member; else the actions it produced when applied.

    At-least-once delivery replays events after a crash (member-events from the last commit,
    inputs re-forwarded by the edge). The table may already hold their effect, so applying them
    again would count a sale twice; their actions may not have reached Kafka, so they are sent
    again (the dispatcher's claim drops the ones already delivered).
    """
    if not record:
        return None
    h = _event_hash(event_id)
    if h not in record.get("_recent", ()):
        return None
    return next((actions for oh, actions in record.get("_recent_out", ()) if oh == h), [])


def remember_event(
    record: MemberRecord, event_id: str, actions: list[dict[str, Any]], batch: int = 0
) -> None:
    """`batch`: how many of this member's events the current batch applied before this one. A
    crash replays whole batches, so every id (and every output) of the batch is kept besides the
    usual few: a member with 40 events in one batch must recognise all 40 on its replay."""
    h = _event_hash(event_id)
    record["_recent"] = [*record.get("_recent", ())[-(RECENT_EVENTS - 1 + batch) :], h]
    if actions:
        record["_recent_out"] = [
            *record.get("_recent_out", ())[-(RECENT_OUTPUTS - 1 + batch) :],
            [h, actions],
        ]


PROFILE_FIELDS = ("birthday", "home_store", "first_name")
CHANNELS = ("push", "sms", "wechat", "email")


def _apply_profile(state: MemberRecord, event: Mapping[str, Any]) -> None:
    """CRM is the master of the fields a profile carries, and only of those: a field the
    profile leaves out keeps its value (a null clears it). CRM's tags are its own (`crm_tags`,
    replaced by each profile that has `tags`); tags that triggers add stay in `tags`, and
    conditions see both. Consent changes per channel, by time (`set_consent`)."""
    for name in PROFILE_FIELDS:
        if name in event:
            cast(dict[str, Any], state)[name] = event[name]
    if "tags" in event:
        state["crm_tags"] = list(event["tags"] or [])
    for channel, granted in (event.get("consent") or {}).items():
        set_consent(state, channel, bool(granted), int(event["ts"]), "crm")
    if event.get("tier"):
        state["crm_tier"] = event["tier"]
        state["tier"] = event["tier"]


def set_consent(state: MemberRecord, channel: str, granted: bool, at: int, source: str) -> bool:
    """Record a consent change unless a later one is known: the latest by time wins, so an old
    CRM profile arriving late cannot re-grant a newer opt-out. Returns whether it applied."""
    history = dict(state.get("consent_at") or {})
    known = history.get(channel)
    if known and int(known[0]) > at:
        return False
    state["consent"] = {**(state.get("consent") or {}), channel: granted}
    history[channel] = [at, source]
    state["consent_at"] = history
    return True


def member_scope(
    record: Mapping[str, Any],
    now: Now,
    loyalty: Loyalty,
    figures: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What trigger conditions see as `member`: the record plus figures derived at `now`.
    `figures`: `rfm(record, now)` when the caller has it (once per step, not per decision)."""
    now_ms, tz, local = now.ms, now.tz, now.local
    presence = record.get("presence") or {}
    last = record.get("prev_visit_ts")
    crm_tags = record.get("crm_tags")
    return {
        **record,
        **(figures if figures is not None else rfm(record, now_ms, tz)),
        "tags": [*crm_tags, *(record.get("tags") or ())] if crm_tags else record.get("tags") or [],
        "in_store": bool(presence),
        "store_id": presence.get("store"),
        "zone_id": presence.get("zone"),
        "days_since_prev_visit": None if last is None else (now_ms - last) / 86_400_000,
        "birthday_month": str(record.get("birthday") or "")[5:7] == f"{local.month:02d}",
        "member_day": local.day in loyalty.member_days,
    }


MAX_MERGED_IDS = 20


def _visit_window(record: Mapping[str, Any], ctx: StateContext) -> tuple[int, int] | None:
    """(start, end) of the record's last visit; a visit in progress lasts until its timeout."""
    start = record.get("last_visit_ts")
    if not start:
        return None
    presence = record.get("presence")
    if presence:
        return int(presence["visit_start"]), int(
            presence["last_seen"] + ctx.store(presence["store"]).visit_timeout_ms
        )
    return int(start), int(record.get("last_visit_end") or start)


def merge_anonymous(
    state: MemberRecord, anon_id: str, anon: Mapping[str, Any], ctx: StateContext
) -> bool:
    """Fold an anonymous visitor's history into a member, once per anonymous id: visits,
    purchases (spend buckets, receipts, RFM), points, growth value and tier.

    The visit in progress may be the same one seen twice (a check-in by OpenID, then a WiFi
    association from the not yet linked phone): last visits that overlap in time are one visit,
    counted once. Deterministic and idempotent: replaying the same merge changes nothing.
    """
    merged = list(state.get("merged_from") or [])
    if anon_id in merged:
        return False
    mine, theirs = _visit_window(state, ctx), _visit_window(anon, ctx)
    same_visit = bool(mine and theirs and theirs[0] <= mine[1] and mine[0] <= theirs[1])
    state["visits"] = state["visits"] + int(anon.get("visits") or 0) - int(same_visit)
    firsts = [t for t in (state["first_visit_ts"], anon.get("first_visit_ts")) if t]
    state["first_visit_ts"] = min(firsts) if firsts else None
    by_store = dict(state["visits_by_store"])
    for store, count in (anon.get("visits_by_store") or {}).items():
        by_store[store] = by_store.get(store, 0) + int(count)
    if same_visit:
        store = state.get("last_visit_store") or anon.get("last_visit_store")
        if store and by_store.get(store, 0) > 1:
            by_store[store] -= 1
        _join_visits(state, anon)
    elif (anon.get("last_visit_ts") or 0) > (state["last_visit_ts"] or 0):
        state["prev_visit_ts"] = state["last_visit_ts"] or anon.get("prev_visit_ts")
        state["last_visit_ts"] = anon["last_visit_ts"]
        if anon.get("last_visit_store"):
            state["last_visit_store"] = anon["last_visit_store"]
        if anon.get("presence") and not state.get("presence"):
            state["presence"] = anon["presence"]
    state["visits_by_store"] = by_store
    if anon.get("checkin_day") and anon.get("checkin_day") == state.get("checkin_day"):
        state["checkins_today"] += int(anon.get("checkins_today") or 0)
    elif anon.get("checkin_day") and anon["checkin_day"] > (state.get("checkin_day") or ""):
        state["checkin_day"] = anon["checkin_day"]
        state["checkins_today"] = int(anon.get("checkins_today") or 0)
    state["points"] = int(state.get("points") or 0) + int(anon.get("points") or 0)
    if anon.get("purchases"):
        merge_purchases(state, anon["purchases"], ctx)
    state["last_seen_ts"] = max(
        int(state.get("last_seen_ts") or 0), int(anon.get("last_seen_ts") or 0)
    )
    state["merged_from"] = [*merged, anon_id][-MAX_MERGED_IDS:]
    return True


def _join_visits(state: MemberRecord, anon: Mapping[str, Any]) -> None:
    """The member's and the visitor's last visits are one: the earlier start, the later end, the
    presence of whichever was seen last (a visit in progress wins over an ended one)."""
    starts = [t for t in (state.get("last_visit_ts"), anon.get("last_visit_ts")) if t]
    state["last_visit_ts"] = min(starts)
    mine, theirs = state.get("presence"), anon.get("presence")
    if mine and theirs:
        later = theirs if theirs["last_seen"] > mine["last_seen"] else mine
        state["presence"] = {
            **later,
            "visit_start": min(mine["visit_start"], theirs["visit_start"]),
            "last_seen": max(mine["last_seen"], theirs["last_seen"]),
            "zone_ms": {
                z: mine["zone_ms"].get(z, 0) + theirs["zone_ms"].get(z, 0)
                for z in {*mine["zone_ms"], *theirs["zone_ms"]}
            },
        }
    elif theirs:
        state["presence"] = cast(Any, {**theirs, "visit_start": state["last_visit_ts"]})
    if anon.get("last_visit_end"):
        state["last_visit_end"] = max(
            int(state.get("last_visit_end") or 0), int(anon["last_visit_end"])
        )


def merge_purchases(state: MemberRecord, theirs: Mapping[str, Any], ctx: StateContext) -> None:
    """Add a visitor's purchases to the member's: spend buckets, receipts (so a later refund of
    an anonymous sale finds it), the receipts already counted, basket facts; then growth value
    and tier follow the merged spend (never below the tier CRM granted)."""
    mine: Any = state.get("purchases")
    if not mine:
        state["purchases"] = cast(Any, {**theirs})
        p: Any = state["purchases"]
    else:
        p = {**mine, "days": dict(mine["days"]), "months": dict(mine["months"])}
        for name in ("days", "months"):
            for bucket, (n, amount) in theirs[name].items():
                count, total = p[name].get(bucket, [0, 0.0])
                p[name][bucket] = [int(count + n), round(total + amount, 2)]
        p["receipts"] = dict(
            list({**theirs["receipts"], **mine["receipts"]}.items())[-RECEIPTS_KEPT:]
        )
        settled = [*(theirs.get("settled") or ()), *(mine.get("settled") or ())]
        p["settled"] = list(dict.fromkeys(settled))[-SETTLED_KEPT:]
        firsts = [t for t in (mine["first_ts"], theirs["first_ts"]) if t]
        p["first_ts"] = min(firsts) if firsts else None
        p["last_ts"] = max(mine["last_ts"] or 0, theirs["last_ts"] or 0) or None
        later = theirs if (theirs["last_ts"] or 0) > (mine["last_ts"] or 0) else mine
        p["categories"] = list(
            dict.fromkeys([*later["categories"], *mine["categories"], *theirs["categories"]])
        )[:5]
        p["brands"] = list(dict.fromkeys([*later["brands"], *mine["brands"], *theirs["brands"]]))[
            :5
        ]
        p["basket_items"], p["basket_total"] = later["basket_items"], later["basket_total"]
        if theirs["spend_day"] == mine["spend_day"]:
            p["spend_today"] = round(mine["spend_today"] + theirs["spend_today"], 2)
        elif (theirs["spend_day"] or "") > (mine["spend_day"] or ""):
            p["spend_day"], p["spend_today"] = theirs["spend_day"], theirs["spend_today"]
        state["purchases"] = p
    at = int(p["last_ts"] or state.get("last_seen_ts") or 0)
    presence = state.get("presence")
    tz = ctx.store(presence["store"] if presence else None).tz
    state["growth"] = rfm(state, at, tz)["m365"]
    state["growth_day"] = at // 86_400_000
    retier(state, ctx.loyalty, at, {"event_id": "merge", "store_id": None}, "merge")


def member_next_due(record: Mapping[str, Any], ctx: StateContext) -> int | None:
    """When time alone next changes this member: presence, or a pending trigger pattern."""
    dues = [next_due(record, ctx.stores, ctx.extra_dwell_ms)]
    dues += [int(p["due"]) for p in (record.get("pending") or {}).values()]
    dues += [int(a["payload"]["not_before"]) for a in record.get("held") or ()]
    present = [d for d in dues if d is not None]
    return min(present) if present else None


def set_patterns(
    state: MemberRecord, arm: Mapping[str, Mapping[str, Any]], disarm: Iterable[str]
) -> None:
    """Start or drop pending trigger patterns: `pending` (fire at `due`) or `armed` (sequences)."""
    pending = dict(state.get("pending") or {})
    armed = dict(state.get("armed") or {})
    for trigger_id in disarm:
        pending.pop(trigger_id, None)
        armed.pop(trigger_id, None)
    for trigger_id, entry in arm.items():
        (pending if "due" in entry else armed)[trigger_id] = dict(entry)
    state["pending"], state["armed"] = pending, armed


def count_sends(state: MemberRecord, channels: Iterable[str], day: str, week: str) -> None:
    """Messages per channel today and this week, for frequency caps across triggers."""
    sent = dict(state.get("sent") or {})
    for channel in channels:
        e_day, n_day, e_week, n_week = sent.get(channel) or (day, 0, week, 0)
        sent[channel] = [
            day,
            (n_day if e_day == day else 0) + 1,
            week,
            (n_week if e_week == week else 0) + 1,
        ]
    state["sent"] = sent


def apply_member_actions(state: MemberRecord, actions: Iterable[Mapping[str, Any]]) -> None:
    """Points and tags that triggers award take effect on the member's record at once (in
    `tags`: a trigger adds and removes its own tags, never CRM's `crm_tags`)."""
    for action in actions:
        payload = action["payload"]
        if action["kind"] == "points":
            state["points"] = int(state.get("points", 0)) + int(payload["points"])
        elif action["kind"] == "tag":
            tags = [t for t in (state.get("tags") or []) if t not in payload["remove"]]
            state["tags"] = tags + [t for t in payload["add"] if t not in tags]


def record_fires(state: MemberRecord, fired_trigger_ids: Iterable[str], now_ms: int) -> None:
    """Remember when each trigger last fired for this member and how often (cooldowns, caps)."""
    fired = dict(state.get("fired") or {})
    for trigger_id in fired_trigger_ids:
        _, count = fired.get(trigger_id, (0, 0))
        fired[trigger_id] = [now_ms, count + 1]
    state["fired"] = fired


UNKNOWN_TRIGGER_MEMORY_MS = 90 * 86_400_000  # a paused trigger's fires, should it resume
COUPON_MEMORY_MS = 30 * 86_400_000  # after expiry: a late redemption is still told `expired`


def prune(state: MemberRecord, memory_ms: Mapping[str, int | None], now_ms: int) -> None:
    """Forget, once a day, what no guardrail can need any more, so a member who shops every day
    does not grow a record without end: a trigger's fire once its cooldown and goal window have
    passed (never for a trigger with max_fires: the count is the guardrail); the fires of a
    trigger no longer live after 90 days (a paused one may resume); a conversion mark whose fire
    is forgotten; coupons 30 days past their expiry; frequency-cap counts of an earlier week."""
    day = now_ms // 86_400_000
    if state.get("pruned_day") == day:
        return
    state["pruned_day"] = day
    fired = state.get("fired") or {}
    kept = {}
    for trigger_id, entry in fired.items():
        memory = memory_ms.get(trigger_id, UNKNOWN_TRIGGER_MEMORY_MS)
        if memory is None or now_ms - int(entry[0] or 0) <= max(memory, 86_400_000):
            kept[trigger_id] = entry
    if len(kept) != len(fired):
        state["fired"] = kept
    converted = state.get("converted")
    if converted and any(t not in kept for t in converted):
        state["converted"] = {t: at for t, at in converted.items() if t in kept}
    coupons = state.get("coupons")
    if coupons:
        fresh = {c: e for c, e in coupons.items() if now_ms - int(e[5]) <= COUPON_MEMORY_MS}
        if len(fresh) != len(coupons):
            state["coupons"] = fresh
    sent = state.get("sent")
    if sent:
        week = max(str(e[2]) for e in sent.values())
        if any(str(e[2]) != week for e in sent.values()):
            state["sent"] = {c: e for c, e in sent.items() if str(e[2]) == week}


DECISIONS_KEPT = 12  # ~60 bytes each as JSON: the member record grows by about 700 bytes at most
KEPT_VERDICTS = ("fired", "held_out", "suppressed", "error")


def remember_decisions(
    state: MemberRecord, decided: Iterable[tuple[str, str, str, str]], now_ms: int
) -> None:
    """Keep the member's last DECISIONS_KEPT decisions that mattered: (trigger id, verdict,
    reason, event type) of those fired, held out, suppressed or in error, with the time. It answers
    "why did member X not get the welcome coupon yesterday?" (GET /members/{id}/decisions).
    `not_matched` is not kept: every event is checked against many triggers, and /explain
    answers it for any event. Nor is a trigger outside its `schedule`: that is the same for every
    member (the trigger's own definition says so), and 40 ended campaigns wiped a member's real
    history at every check-in."""
    new = [
        [t, v, r, e, now_ms]
        for t, v, r, e in decided
        if v in KEPT_VERDICTS and not (v == "suppressed" and r == "schedule")
    ]
    if new:
        state["decisions"] = [*(state.get("decisions") or ()), *new][-DECISIONS_KEPT:]


def hold(state: MemberRecord, actions: list[dict[str, Any]]) -> None:
    """Keep messages fired in quiet hours until they end (payload `not_before`)."""
    if actions:
        state["held"] = [*(state.get("held") or ()), *actions]


def release_held(state: MemberRecord, now_ms: int) -> list[dict[str, Any]]:
    """The held messages due at `now_ms`, taken out of the record (sent with this step; the
    dispatcher still drops one whose event has passed its max age)."""
    held = state.get("held")
    if not held:
        return []
    due = [a for a in held if int(a["payload"]["not_before"]) <= now_ms]
    if due:
        rest = [a for a in held if int(a["payload"]["not_before"]) > now_ms]
        if rest:
            state["held"] = rest
        else:
            del state["held"]
    # consent withdrawn while the message waited (an unsubscribe at 23:00): not sent
    consent = state.get("consent") or {}
    withdrawn = [a for a in due if not consent.get(a["channel"])]
    if withdrawn:
        remember_decisions(
            state, [(a["trigger_id"], "suppressed", "consent", "held") for a in withdrawn], now_ms
        )
        due = [a for a in due if consent.get(a["channel"])]
    return due


RETURNED = "action_returned"  # a send dropped after it fired (budget, a permanent failure)


def give_back(state: MemberRecord, returned: Mapping[str, Any], ctx: StateContext) -> None:
    """A send that was suppressed later (coupon budget spent) or failed for good does not count:
    its channel's frequency-cap slot is given back, and the trigger's fire is taken out of the
    fire log (count, and the cooldown it started; an earlier fire's cooldown is not restored)."""
    fired_at = int(returned.get("fired_at") or 0)
    channel, trigger_id = returned.get("channel"), returned.get("trigger_id")
    presence = state.get("presence")
    now = Now.of(fired_at, ctx.store(presence["store"] if presence else None).tz)
    sent = dict(state.get("sent") or {})
    entry = sent.get(str(channel))
    if entry:
        e_day, n_day, e_week, n_week = entry
        sent[str(channel)] = [
            e_day,
            max(0, n_day - 1) if e_day == now.day else n_day,
            e_week,
            max(0, n_week - 1) if e_week == now.week else n_week,
        ]
        state["sent"] = sent
    fired = dict(state.get("fired") or {})
    last = fired.get(str(trigger_id))
    if last and int(last[0]) == fired_at:
        count = max(0, int(last[1]) - 1)
        if count:
            fired[str(trigger_id)] = [0, count]
        else:
            del fired[str(trigger_id)]
        state["fired"] = fired
