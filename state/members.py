"""The member state table, co-partitioned with member-events (key: member id)."""

from __future__ import annotations

from app import app, settings

member_state_table = app.Table(
    "member-state",
    key_type=str,
    value_type=None,  # a plain dict (state.member_state.MemberRecord), stored with orjson
    partitions=settings.partitions,
    help="per-member record: visits, presence, purchases, trigger fire log",
)
