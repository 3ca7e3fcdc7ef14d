"""The stall watch's decisions: which partitions are stalled, and when.

End to end (faust really leaving a partition unfetched after a rebalance, and the repair making
it move) is `rebalance-kill` in tests/integration/test_chaos.py; here a fake consumer stands in
for faust and aiokafka so the timing rules can be checked one by one.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.types import TP

from faust_ext import partition_watch
from faust_ext.partition_watch import PartitionWatch, behind

TP0 = TP("checkins", 0)


def test_behind_when_broker_has_more_than_fetched():
    assert behind((10, 10), 12)
    assert behind((None, None), 3)  # never fetched at all


def test_behind_when_fetched_but_never_committed():
    # The case the chaos run found: aiokafka's position at the end, faust committed nothing.
    assert behind((39, None), 39)
    assert behind((39, 30), 39)


def test_not_behind_when_done_or_empty():
    assert not behind((39, 39), 39)
    assert not behind((0, None), 0)
    assert not behind((None, None), None)


class FakeConsumer:
    def __init__(self) -> None:
        self.position: dict[TP, int | None] = {TP0: 0}
        self._committed_offset: dict[TP, int | None] = {}
        self.ends: dict[TP, int] = {TP0: 0}
        self._buffered_partitions: set[TP] = set()

    def assignment(self) -> set[TP]:
        return set(self.position)

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}


@pytest.fixture
def watch(monkeypatch) -> tuple[PartitionWatch, FakeConsumer]:
    consumer = FakeConsumer()
    app = SimpleNamespace(
        consumer=consumer,
        rebalancing=False,
        tables=SimpleNamespace(
            changelog_topics=set(),
            recovery=SimpleNamespace(completed=SimpleNamespace(is_set=lambda: True)),
        ),
    )
    monkeypatch.setattr(partition_watch, "fetch_position", lambda app, tp: consumer.position[tp])
    monkeypatch.setattr(partition_watch, "describe", lambda app, tp: {"topic": tp.topic})
    return PartitionWatch(app, stall_after_s=30), consumer  # type: ignore[arg-type]


async def test_backlog_that_does_not_move_is_stalled_after_the_period(watch):
    w, consumer = watch
    consumer.ends[TP0] = 50
    assert await w.check(now=0) == {}
    assert await w.check(now=29) == {}  # not yet
    stalled = await w.check(now=31)
    assert list(stalled) == [TP0] and stalled[TP0]["stalled_s"] == 31


async def test_paused_partition_whose_agent_still_commits_is_not_stalled(watch):
    w, consumer = watch
    consumer.ends[TP0] = 500
    consumer.position[TP0] = 300  # faust paused fetching: the agent's buffer is full
    consumer._committed_offset[TP0] = 10
    assert await w.check(now=0) == {}
    for t in range(1, 5):  # a slow gateway: the agent acknowledges a few records at a time
        consumer._committed_offset[TP0] = 10 + t * 20
        assert await w.check(now=t * 20) == {}
    assert list(await w.check(now=120)) == [TP0]  # and once it stops, it is stalled


async def test_moving_partition_is_never_stalled(watch):
    w, consumer = watch
    consumer.ends[TP0] = 1000
    for t in range(0, 120, 5):
        consumer.position[TP0] = t  # slow, but moving
        assert await w.check(now=t) == {}


async def test_idle_partition_with_nothing_waiting_is_not_stalled(watch):
    w, consumer = watch
    consumer.position[TP0], consumer._committed_offset[TP0], consumer.ends[TP0] = 40, 40, 40
    assert await w.check(now=0) == {} and await w.check(now=300) == {}


async def test_idle_partition_that_just_received_records_is_not_stalled(watch):
    w, consumer = watch
    await w.check(now=0)
    await w.check(now=100)  # idle for a long time: nothing waits
    consumer.ends[TP0] = 2  # a record arrives
    assert await w.check(now=101) == {}
    assert list(await w.check(now=131)) == [TP0]  # ... and is still not read 30 s later


async def test_no_stall_while_the_agents_wait_for_redis_on_purpose(watch):
    w, consumer = watch
    consumer.ends[TP0] = 50
    down = {"redis": "down"}
    w.excuse = lambda: "redis down" if down["redis"] == "down" else None
    for t in (0, 40, 80):
        assert await w.check(now=t) == {}
    down["redis"] = "up"
    assert await w.check(now=81) == {}
    assert list(await w.check(now=112)) == [TP0]  # 30 s after Redis came back, still stuck


async def test_a_rebalance_restarts_the_clock(watch):
    w, consumer = watch
    consumer.ends[TP0] = 50
    await w.check(now=0)
    w.app.rebalancing = True
    assert await w.check(now=20) == {}
    w.app.rebalancing = False
    assert await w.check(now=31) == {}  # measured again from the end of the rebalance
    assert list(await w.check(now=62)) == [TP0]


def test_a_gap_is_refused_once_and_re_read_then_accepted_if_it_comes_back():
    from faust_ext.gap_guard import GapPolicy

    policy = GapPolicy()
    assert not policy.accept(TP0, 191, 198)  # skipped by faust: not acknowledged
    assert policy.take_rereads() == {TP0: 191}  # the watch seeks back to read them
    assert policy.take_rereads() == {}
    assert policy.accept(TP0, 191, 198)  # still missing after the re-read: a real gap
    assert not policy.accept(TP0, 300, 301)  # a new one is refused again


async def test_reread_seeks_back_to_the_committed_offset(watch):
    w, consumer = watch
    seeks: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        seeks.append((tp, offset))

    consumer.seek = seek
    consumer._committed_offset[TP0] = 173
    await w.reread({TP0: 191, TP("gone", 0): 5})  # a partition no longer ours is left alone
    assert seeks == [(TP0, 173)]


class AckedConsumer:
    """What CommitGuard reads of faust's consumer: committed offsets, acked offsets, gaps."""

    def __init__(self, committed: int | None, acked: list[int], earliest: int = 0) -> None:
        self._committed_offset = {TP0: committed}
        self._acked = {TP0: acked}
        self._gap: dict[TP, list] = {TP0: []}
        self.earliest = earliest

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.earliest for tp in tps}


async def test_commit_waits_for_the_record_at_the_committed_offset():
    from faust_ext.gap_guard import CommitGuard

    guard = CommitGuard()
    # faust itself would commit 105-110 here, passing over 104 (never acknowledged)
    assert not guard.allows(AckedConsumer(104, [105, 106, 110]), TP0)
    assert guard.allows(AckedConsumer(104, [104, 105]), TP0)


async def test_never_committed_partition_commits_only_from_its_first_offset():
    import asyncio

    from faust_ext.gap_guard import CommitGuard

    guard = CommitGuard()
    skipped_head = AckedConsumer(None, list(range(90, 104)))
    assert not guard.allows(skipped_head, TP0)  # start not known yet
    await asyncio.sleep(0)  # the first offset is looked up once
    await asyncio.sleep(0)
    assert guard.starts == {TP0: 0}
    assert not guard.allows(skipped_head, TP0)  # 0-89 never acked
    assert guard.allows(AckedConsumer(None, list(range(0, 104))), TP0)


async def test_a_partition_held_behind_a_skipped_head_is_re_read_within_seconds():
    from faust_ext.gap_guard import CommitGuard, policy

    policy.take_rereads()
    guard = CommitGuard(reread_after_s=5.0)
    skipped = AckedConsumer(600, list(range(610, 700)))  # 600-609 never delivered
    assert not guard.allows(skipped, TP0, now=100.0)
    assert not guard.allows(skipped, TP0, now=103.0)
    assert policy.take_rereads() == {}  # still within the time a record may take
    assert not guard.allows(skipped, TP0, now=105.5)
    assert policy.take_rereads() == {TP0: 600}  # the watch seeks back to 600
    assert not guard.allows(skipped, TP0, now=106.0)
    assert policy.take_rereads() == {}  # not again until another period passed
    assert guard.allows(AckedConsumer(600, list(range(600, 700))), TP0, now=107.0)
    assert guard.held_since == {}
