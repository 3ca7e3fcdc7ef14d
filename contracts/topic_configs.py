"""Every topic StorePulse creates, with its topic-level configuration (pure: tools and tests create
topics without building the faust App)."""

from __future__ import annotations

from contracts.inputs import INPUT_SCHEMAS

_CONFIGS: dict[str, dict[str, str]] = {
    **{name: {} for name in INPUT_SCHEMAS},
    "members": {"cleanup.policy": "compact"},  # latest profile per member id
    "triggers": {"cleanup.policy": "compact"},  # latest definition per trigger id
    "trigger-audit": {"retention.ms": "-1"},  # every change to a trigger, kept for good
    "member-events": {},
    "derived-events": {},
    "identity-audit": {},
    # Redis's sources of truth (state/rebuild.py): the latest record per identifier, per code
    "identity-bindings": {"cleanup.policy": "compact"},
    "coupon-codes": {"cleanup.policy": "compact"},
    "decisions": {},
    "actions": {},
    "deliveries": {},
    "conversions": {},  # redemptions and goal conversions per trigger (the report reads it)
    "dead-letter": {"retention.ms": str(30 * 86_400_000)},  # a month to look and replay
}


def topic_configs(prefix: str = "") -> dict[str, dict[str, str]]:
    """Kafka topic name (`prefix` + StorePulse name) -> its topic configs."""
    return {prefix + name: dict(configs) for name, configs in _CONFIGS.items()}
