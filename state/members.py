"""The member tables, co-partitioned with member-events (key: member id)."""

from __future__ import annotations

from app import current

app, settings = current()

member_state_table = app.Table(
    "member-state",
    key_type=str,
    value_type=None,  # a plain dict (state.member_state.MemberRecord), stored with orjson
    partitions=settings.partitions,
    help="per-member record: visits, presence, purchases, points, CRM data, trigger fire log",
)

# Only members with something pending (in a store, or a delayed trigger) have a row here, so
# rebuilding the in-memory schedule after a rebalance costs what is due, not every member.
member_timers_table = app.Table(
    "member-timers",
    key_type=str,
    value_type=None,  # {"due": epoch ms of the next time-based change}
    partitions=settings.partitions,
    help="next time-based change per member (visit end, dwell threshold, delayed trigger)",
)
