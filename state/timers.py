"""The in-memory schedule of due members: a heap rebuilt from `member-timers` after rebalances.

Its cost follows the number of due items: a tick pops only what is due; nothing scans members.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class Schedule:
    heap: list[tuple[int, str]] = field(default_factory=list)
    due_at: dict[str, int] = field(default_factory=dict)  # latest due per member (lazy deletes)
    built_for: frozenset[object] | None = None

    def set(self, member_id: str, due: int | None) -> None:
        if due is None:
            self.due_at.pop(member_id, None)
            return
        if self.due_at.get(member_id) != due:
            self.due_at[member_id] = due
            heapq.heappush(self.heap, (due, member_id))

    def pop_due(self, now: int, limit: int | None = None) -> list[tuple[str, int]]:
        """Members due by `now`, oldest first; at most `limit`, the rest stay due."""
        out: list[tuple[str, int]] = []
        while self.heap and self.heap[0][0] <= now and (limit is None or len(out) < limit):
            due, member_id = heapq.heappop(self.heap)
            if self.due_at.get(member_id) == due:  # else superseded by a later set()
                del self.due_at[member_id]
                out.append((member_id, due))
        return out

    def rebuild(self, rows: Iterable[tuple[str, int]], assignment: frozenset[object]) -> int:
        self.heap, self.due_at = [], {}
        for member_id, due in rows:
            self.set(member_id, due)
        self.built_for = assignment
        return len(self.due_at)

    def __len__(self) -> int:
        return len(self.due_at)


schedule = Schedule()


@dataclass
class StreamClock:
    """The time timers compare due times with.

    While events flow, it is the event-time watermark (the newest event time seen, never ahead of
    the wall clock): a backlog replayed after an outage then closes visits when its own events
    say so, not all at once. When the stream has been quiet for `idle_ms`, it is the wall clock,
    so visits end and dwell thresholds fire with no new event at all.
    """

    idle_ms: int = 2000
    watermark: int = 0
    last_arrival: int = 0

    def observe(self, event_ts: int, wall_ms: int) -> None:
        self.watermark = max(self.watermark, min(event_ts, wall_ms))
        self.last_arrival = wall_ms

    def now(self, wall_ms: int) -> int:
        if wall_ms - self.last_arrival >= self.idle_ms:
            return wall_ms
        return self.watermark


clock = StreamClock()
