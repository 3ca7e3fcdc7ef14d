"""One value for "now" in a store's time zone, computed once per decided event.

Trigger evaluation needs the same instant as epoch ms, as store-local time (schedules, quiet
hours), as local day and ISO week (frequency caps) and as the `now` conditions see; each was
converted from the epoch four to six times per decided event before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo


class Now:
    """`day`, `week` and `scope` are computed on first use and kept (plain slots: in Python
    3.11 `functools.cached_property` takes a lock on every first access, which cost more than
    the conversions it saves, several times per event)."""

    __slots__ = ("_day", "_scope", "_week", "local", "ms", "tz")

    def __init__(self, ms: int, tz: ZoneInfo, local: datetime) -> None:
        self.ms, self.tz, self.local = ms, tz, local
        self._day: str | None = None
        self._week: str | None = None
        self._scope: dict[str, Any] | None = None

    @classmethod
    def of(cls, ms: int, tz: ZoneInfo) -> Now:
        return cls(ms, tz, datetime.fromtimestamp(ms / 1000, tz))

    @property
    def minute(self) -> int:
        """Minute of the local day (0-1439)."""
        return self.local.hour * 60 + self.local.minute

    @property
    def day(self) -> str:
        if self._day is None:
            self._day = self.local.date().isoformat()
        return self._day

    @property
    def week(self) -> str:
        if self._week is None:
            year, week, _ = self.local.isocalendar()
            self._week = f"{year}-W{week:02d}"
        return self._week

    @property
    def scope(self) -> dict[str, Any]:
        """`now` as conditions see it: store-local calendar fields."""
        if self._scope is None:
            local = self.local
            self._scope = {
                "ts": self.ms,
                "hour": local.hour,
                "minute": local.minute,
                "weekday": local.isoweekday(),
                "month": local.month,
                "day": local.day,
                "date": self.day,
            }
        return self._scope
