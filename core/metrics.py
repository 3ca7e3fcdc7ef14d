"""StorePulse's Prometheus metrics, declared once. No member id ever goes into a label."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("storepulse_events_in_total", "Input records consumed", ["topic"])
EVENTS_FORWARDED = Counter(
    "storepulse_events_forwarded_total", "Canonical events sent to member-events", ["topic", "type"]
)
DUPLICATES = Counter(
    "storepulse_duplicates_dropped_total", "Input records dropped as duplicate event_id", ["topic"]
)
DEAD_LETTERS = Counter(
    "storepulse_dead_letters_total", "Records sent to dead-letter", ["source", "reason"]
)
IDENTITY_LINKS = Counter(
    "storepulse_identity_links_total", "Identifiers newly bound to a member", ["kind"]
)
IDENTITY_UNBINDS = Counter(
    "storepulse_identity_unbinds_total",
    "Identifiers unbound from a member (outcome: unbound, not_bound)",
    ["kind", "outcome"],
)
MEMBER_DATA_CHANGES = Counter(
    "storepulse_member_data_changes_total",
    "Member data rights requests carried out (erasure, consent, unsubscribe, unbind, export)",
    ["change"],
)
ERASED = Counter(
    "storepulse_member_records_erased_total",
    "Member records erased on request (state and timer tombstoned on their changelogs)",
)
INPUT_TOMBSTONES = Counter(
    "storepulse_input_tombstones_total",
    "Tombstones on compacted input topics (an erased member's profile): not events, skipped",
    ["topic"],
)
IDENTITY_CONFLICTS = Counter(
    "storepulse_identity_conflicts_total",
    "Links refused: identifier already bound to another member",
    ["source", "kind"],
)
MERGES = Counter(
    "storepulse_anonymous_merges_total", "Anonymous visitor histories merged into a member"
)
MEMBER_REPLAYS = Counter(
    "storepulse_member_replays_total",
    "Events a member had applied already (a replay after a crash): skipped, actions sent again",
)
MEMBER_EVENTS = Counter(
    "storepulse_member_events_total", "Events applied to member state", ["type"]
)
TRIGGER_DECISIONS = Counter(
    "storepulse_trigger_decisions_total",
    "Trigger evaluations by verdict (fired, suppressed, held_out) and reason",
    ["trigger", "verdict", "reason"],
)
_DECISION_CHILDREN: dict[tuple[str, str, str], Any] = {}


def count_decision(trigger: str, verdict: str, reason: str) -> None:
    """TRIGGER_DECISIONS.labels(...).inc() with the child looked up in a plain dict: an event
    meets hundreds of triggers when there are 10,000, and `labels()` (lock, label checks) cost
    5 % of the worker's CPU there."""
    key = (trigger, verdict, reason)
    child = _DECISION_CHILDREN.get(key)
    if child is None:
        child = _DECISION_CHILDREN[key] = TRIGGER_DECISIONS.labels(trigger, verdict, reason)
    child.inc()


ACTIONS_OUT = Counter("storepulse_actions_total", "Actions emitted", ["trigger", "channel"])
DELIVERIES = Counter(
    "storepulse_deliveries_total",
    "Action deliveries by channel and outcome",
    ["channel", "outcome", "reason"],
)
LATENCY = Histogram(
    "storepulse_event_to_action_seconds",
    "Event time to delivery at the channel",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
TRIGGER_DEFINITION_ERRORS = Counter(
    "storepulse_trigger_definition_errors_total", "Trigger definitions rejected from the topic"
)
TRIGGERS_LOADED = Gauge("storepulse_triggers_loaded", "Enabled trigger definitions in this worker")
REDIS_UP = Gauge("storepulse_redis_up", "1 when the last Redis call succeeded, else 0")
TIMERS_FIRED = Counter("storepulse_timers_fired_total", "Due timer entries turned into events")
TIMERS_PENDING = Gauge("storepulse_timers_pending", "Members with a pending time-based change")
PARTITIONS_STALLED = Gauge(
    "storepulse_partitions_stalled",
    "Assigned partitions with records waiting whose position has not moved (partition_watch)",
)
STALL_REPAIRS = Counter(
    "storepulse_stall_repairs_total", "Repairs of stalled partitions, by what was done", ["action"]
)
DERIVED_EVENTS = Counter(
    "storepulse_derived_events_total", "Derived events (visits, zones, dwell, tiers)", ["type"]
)
DELIVERY_RETRIES = Counter("storepulse_delivery_retries_total", "Webhook retries", ["channel"])
CIRCUIT_STATE = Gauge(
    "storepulse_circuit_state", "Webhook circuit: 0 closed, 0.5 half-open, 1 open", ["channel"]
)
POOL_REMAINING = Gauge("storepulse_coupon_pool_remaining", "Coupons left in a pool", ["pool"])
POOL_BUDGET = Gauge(
    "storepulse_coupon_pool_budget", "A pool's budget in config/coupons.yaml", ["pool"]
)
TRIGGER_ERRORS = Counter(
    "storepulse_trigger_errors_total",
    "Evaluations of a trigger that raised (decision `error`); the event's other triggers go on",
    ["trigger"],
)
TRIGGERS_PAUSED = Gauge(
    "storepulse_triggers_paused",
    "Triggers this worker paused after repeated errors (until they are published again)",
)
AGENT_CRASHES = Counter(
    "storepulse_agent_crashes_total", "Agent crashes (faust restarts the agent)", ["agent"]
)
REDIS_EPOCH_CHANGES = Counter(
    "storepulse_redis_epoch_changes_total",
    "Times this worker found Redis had lost its data set (flushed, emptied, or behind)",
)
REDIS_REBUILDING = Gauge(
    "storepulse_redis_rebuilding", "1 while this worker rebuilds Redis from Kafka, else 0"
)
REDIS_REBUILD_SECONDS = Gauge(
    "storepulse_redis_rebuild_seconds", "How long this worker's last rebuild of Redis took"
)
COUPON_RESERVATIONS = Counter(
    "storepulse_coupon_codes_recorded_total",
    "Coupon codes recorded on the coupon-codes topic before their pool was charged",
    ["pool", "status"],
)
DUPLICATE_RECEIPTS = Counter(
    "storepulse_duplicate_receipts_total",
    "Sales and refunds a member had already counted (same store and receipt id): not again",
)
STORE_EVENTS = Counter(
    "storepulse_store_events_total",
    "Input events per store and source (stores outside the registry: store=unknown)",
    ["store", "source"],
)
STORE_LAST_EVENT = Gauge(
    "storepulse_store_last_event_seconds",
    "Unix time of the latest event this worker read from a store's source (max over workers)",
    ["store", "source"],
)
STORE_OPEN = Gauge(
    "storepulse_store_open", "1 while a store is within its opening hours, else 0", ["store"]
)
STORE_SILENT_AFTER = Gauge(
    "storepulse_store_feed_silent_after_seconds",
    "How long a store's feed may send nothing in opening hours before it counts as silent",
    ["store"],
)
REDEMPTIONS = Counter(
    "storepulse_redemptions_total",
    "Coupon codes named at a till: attributed, unknown_code, already_redeemed, expired",
    ["trigger", "outcome"],
)
CONVERSIONS = Counter(
    "storepulse_conversions_total",
    "Purchases that converted a trigger's goal, treated or control (held out)",
    ["trigger", "group"],
)
