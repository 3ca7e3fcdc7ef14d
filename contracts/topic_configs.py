"""Every topic StorePulse creates, with its topic-level configuration (pure: tools and tests create
topics without building the faust App)."""

from __future__ import annotations

from collections.abc import Mapping

from contracts.inputs import INPUT_SCHEMAS

_CONFIGS: dict[str, dict[str, str]] = {
    **{name: {} for name in INPUT_SCHEMAS},
    "members": {"cleanup.policy": "compact"},  # latest profile per member id
    "triggers": {"cleanup.policy": "compact"},  # latest definition per trigger id
    "trigger-audit": {"retention.ms": "-1"},  # every change to a trigger, kept for good
    "member-events": {},
    "derived-events": {},
    "identity-audit": {"retention.ms": "-1"},  # conflicts and unbindings, kept for good
    # member data rights carried out (erasure, consent changes), members named by a keyed hash
    "member-audit": {"retention.ms": "-1"},
    # Redis's sources of truth (state/rebuild.py): the latest record per identifier, per code
    "identity-bindings": {"cleanup.policy": "compact"},
    "coupon-codes": {"cleanup.policy": "compact"},
    "decisions": {},
    "actions": {},
    "deliveries": {},
    "conversions": {},  # redemptions and goal conversions per trigger (the report reads it)
    "dead-letter": {"retention.ms": str(30 * 86_400_000)},  # a month to look and replay
}


# How long the streams that name members keep records (days; STOREPULSE_RETENTION_<TOPIC>_DAYS):
# what an erased member's id still lives in until it ages out. member-events bounds backtests,
# decisions and deliveries bound reports.
RETENTION_DAYS = {
    "member-events": 7.0,
    "derived-events": 7.0,
    "decisions": 90.0,
    "deliveries": 90.0,
}


def topic_configs(
    prefix: str = "", retention_days: Mapping[str, float] | None = None
) -> dict[str, dict[str, str]]:
    """Kafka topic name (`prefix` + StorePulse name) -> its topic configs."""
    days = {**RETENTION_DAYS, **(retention_days or {})}
    out = {prefix + name: dict(configs) for name, configs in _CONFIGS.items()}
    for name, d in days.items():
        out[prefix + name]["retention.ms"] = str(int(d * 86_400_000))
    return out
