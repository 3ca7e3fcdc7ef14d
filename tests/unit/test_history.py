"""History import's time order: a file larger than what is sorted in memory comes back in the
same order as an in-memory stable sort (runs on disk, merged)."""

from __future__ import annotations

import random
from pathlib import Path

from edge.history import TimeOrder


def test_rows_beyond_the_memory_bound_come_back_in_stable_time_order(tmp_path: Path):
    rng = random.Random(3)
    # few distinct times, so many ties: a file's order must hold within the same millisecond
    rows = [{"ts": rng.randrange(0, 40), "line": n} for n in range(1000)]
    order = TimeOrder(tmp_path, rows=64)
    for row in rows:
        order.add(row)
    assert order.count == 1000
    assert list(order) == sorted(rows, key=lambda r: r["ts"])
    assert len(order.runs) == 16  # it did go to disk: 15 full runs and the rest
    assert order.buffer == []


def test_a_small_file_is_sorted_in_memory(tmp_path: Path):
    order = TimeOrder(tmp_path, rows=64)
    for ts in (5, 1, 3):
        order.add({"ts": ts})
    assert [r["ts"] for r in order] == [1, 3, 5]
    assert order.runs == [] and list(tmp_path.iterdir()) == []
