"""The per-member record as a type: what the folds write and the engine and API read agree on
its layout (stored with orjson, so tuples come back as lists: positions are documented here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast

# [epoch ms of the last fire, fires so far]: cooldowns and max_fires (triggers.engine)
FiredEntry = list[int]
# [local day, messages that day, ISO week, messages that week]: frequency caps per channel
SentEntry = list[Any]


class Presence(TypedDict):
    """The visit in progress (state.presence); None on the record between visits."""

    store: str
    visit_start: int
    last_seen: int
    zone: str | None
    zone_since: int | None
    zone_seen: int
    dwell_done: int  # the largest dwell threshold fired in this zone stay (ms)
    zone_ms: dict[str, int]  # time per zone in this visit


class Purchases(TypedDict):
    """Spend buckets and basket facts (state.purchases)."""

    days: dict[str, list[float]]  # local day -> [count, amount], the last 90 days
    months: dict[str, list[float]]  # month -> [count, amount], up to 13 months
    receipts: dict[str, list[Any]]  # "store/receipt id" -> [day, total, points], the last 20
    settled: NotRequired[list[int]]  # hashes of the last 32 sales and refunds (counted once)
    first_ts: int | None
    last_ts: int | None
    categories: list[str]
    brands: list[str]
    basket_items: int
    basket_total: float
    spend_day: str | None
    spend_today: float


class MemberRecord(TypedDict, total=False):
    """One member (or anonymous visitor); `new_member` writes the first keys, folds the rest."""

    member_id: str
    anonymous: bool
    visits: int
    first_visit_ts: int | None
    last_visit_ts: int | None
    prev_visit_ts: int | None
    last_visit_end: int
    last_visit_store: NotRequired[str]
    last_seen_ts: int
    visits_by_store: dict[str, int]
    presence: Presence | None
    checkins_today: int
    checkin_day: str | None
    points: int
    growth: float
    growth_day: NotRequired[int]  # epoch day growth was last computed (state.purchases)
    tier: str
    crm_tier: str
    birthday: str | None
    consent: dict[str, bool]
    consent_at: NotRequired[dict[str, list[Any]]]  # channel -> [ms of the change, source]
    tags: list[str]  # added by triggers
    crm_tags: NotRequired[list[str]]  # from CRM profiles (replaced by each that has tags)
    home_store: str | None
    first_name: str | None
    purchases: Purchases
    fired: dict[str, FiredEntry]  # trigger id -> entry (pruned: state.member_state.prune)
    pruned_day: NotRequired[int]  # epoch day of the last prune
    # the last 12 decisions that mattered: [trigger id, verdict, reason, event type, ms]
    decisions: NotRequired[list[list[Any]]]
    sent: dict[str, SentEntry]  # channel -> entry
    pending: dict[str, dict[str, Any]]  # trigger id -> absence / delay waiting for `due`
    held: NotRequired[list[dict[str, Any]]]  # actions fired in quiet hours, until `not_before`
    # code -> [trigger, action, channel, store, fired at, expires at, value, redeemed at]
    coupons: NotRequired[dict[str, list[Any]]]
    converted: NotRequired[dict[str, int]]  # trigger id -> the fire a purchase converted
    armed: dict[str, dict[str, Any]]  # trigger id -> first event of a sequence
    merged_from: list[str]  # anonymous ids already merged in
    _recent: list[int]  # hashes of the last event ids (the replay guard)
    _recent_out: list[list[Any]]  # [hash, actions] of the last events that acted


def as_record(value: Mapping[str, Any]) -> MemberRecord:
    """A copy of a stored record (a plain dict from the table or a message) as a MemberRecord."""
    return cast(MemberRecord, dict(value))
