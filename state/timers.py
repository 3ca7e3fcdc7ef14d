"""The in-memory schedule of due members and the clock that decides what is due, per partition.

Its cost follows the number of due items: a tick pops only what is due; nothing scans members.
Both are kept per member-events partition: a worker owning one partition that replays a backlog
and one that is live must not fire the backlog's timers by the live partition's time (a visit
would end before the backlog's own later sightings were applied).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2


def partition_of(member_id: str, partitions: int) -> int:
    """The member-events partition of a member id: what the producer's default partitioner picks
    for the key (used where rows come from a table scan, not from an event)."""
    return (murmur2(member_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass
class Schedule:
    heaps: dict[int, list[tuple[int, str]]] = field(default_factory=dict)  # per partition
    due_at: dict[str, int] = field(default_factory=dict)  # latest due per member (lazy deletes)
    built_for: frozenset[object] | None = None

    def set(self, member_id: str, due: int | None, partition: int = 0) -> None:
        if due is None:
            self.due_at.pop(member_id, None)
            return
        if self.due_at.get(member_id) != due:
            self.due_at[member_id] = due
            heapq.heappush(self.heaps.setdefault(partition, []), (due, member_id))

    def pop_due(
        self, now: int | Callable[[int], int], limit: int | None = None
    ) -> list[tuple[str, int, int]]:
        """(member, due, partition) due by `now` (a time, or each partition's time), oldest first
        within a partition; at most `limit`, the rest stay due."""
        out: list[tuple[str, int, int]] = []
        for partition, heap in self.heaps.items():
            until = now(partition) if callable(now) else now
            while heap and heap[0][0] <= until and (limit is None or len(out) < limit):
                due, member_id = heapq.heappop(heap)
                if self.due_at.get(member_id) == due:  # else superseded by a later set()
                    del self.due_at[member_id]
                    out.append((member_id, due, partition))
        return out

    def rebuild(self, rows: Iterable[tuple[str, int, int]], assignment: frozenset[object]) -> int:
        """From (member id, due, partition) rows."""
        self.heaps, self.due_at = {}, {}
        for member_id, due, partition in rows:
            self.set(member_id, due, partition)
        self.built_for = assignment
        return len(self.due_at)

    def __len__(self) -> int:
        return len(self.due_at)


schedule = Schedule()


@dataclass
class StreamClock:
    """The time timers compare due times with, per partition.

    While a partition's events flow, it is its event-time watermark (the newest event time seen
    there, never ahead of the wall clock): a backlog replayed after an outage then closes visits
    when its own events say so, not all at once. When the partition has been quiet for
    `idle_ms`, it is the wall clock, so visits end and dwell thresholds fire with no new event.
    """

    idle_ms: int = 2000
    watermarks: dict[int, int] = field(default_factory=dict)
    last_arrival: dict[int, int] = field(default_factory=dict)

    def observe(self, event_ts: int, wall_ms: int, partition: int = 0) -> None:
        seen = self.watermarks.get(partition, 0)
        self.watermarks[partition] = max(seen, min(event_ts, wall_ms))
        self.last_arrival[partition] = wall_ms

    def now(self, wall_ms: int, partition: int = 0) -> int:
        if wall_ms - self.last_arrival.get(partition, 0) >= self.idle_ms:
            return wall_ms
        return self.watermarks[partition]


clock = StreamClock()
