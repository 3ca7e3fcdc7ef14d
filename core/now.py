"""One value for "now" in a store's time zone, computed once per decided event.

Trigger evaluation needs the same instant as epoch ms, as store-local time (schedules, quiet
hours), as local day and ISO week (frequency caps) and as the `now` conditions see; each was
converted from the epoch four to six times per decided event before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Now:
    ms: int
    tz: ZoneInfo
    local: datetime

    @classmethod
    def of(cls, ms: int, tz: ZoneInfo) -> Now:
        return cls(ms, tz, datetime.fromtimestamp(ms / 1000, tz))

    @property
    def minute(self) -> int:
        """Minute of the local day (0-1439)."""
        return self.local.hour * 60 + self.local.minute

    @cached_property
    def day(self) -> str:
        return self.local.date().isoformat()

    @cached_property
    def week(self) -> str:
        iso = self.local.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"

    @cached_property
    def scope(self) -> dict[str, Any]:
        """`now` as conditions see it: store-local calendar fields."""
        local = self.local
        return {
            "ts": self.ms,
            "hour": local.hour,
            "minute": local.minute,
            "weekday": local.isoweekday(),
            "month": local.month,
            "day": local.day,
            "date": self.day,
        }
