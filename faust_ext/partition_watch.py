"""Stall watch: notices assigned partitions that have records waiting but do not move.

Found by `make chaos`: after a rebalance, faust-streaming sometimes leaves a partition assigned
but never fetched (faust-streaming #166/#629 family); the worker stays up, `/health` said ok,
and that partition's shoppers got nothing. The watch compares, per assigned stream partition,
the consumer position with the highwater every few seconds. A partition with a backlog whose
position has not moved for `stall_after_s` is stalled: it is logged with faust's and aiokafka's
view of it, counted, shown on `/health`, and repaired (see `repair`).

It also catches the other face of the same faust behaviour: a record handed to a stream that is
no longer iterated is never acknowledged, so the committed offset stops for good while reading
goes on (seen at worker start on a large backlog); a restart would replay everything since.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP

from core.metrics import PARTITIONS_STALLED, STALL_REPAIRS
from faust_ext.internals import (
    app_ready,
    committed_offset,
    consumer_waits,
    describe,
    fetch_position,
)

logger = logging.getLogger("storepulse.partition_watch")


@dataclass
class Seen:
    mark: tuple[int | None, int | None]
    since: float  # monotonic time the mark was last seen to change


def behind(mark: tuple[int | None, int | None], end: int | None) -> bool:
    """Records wait: the broker has more than was fetched, or more was fetched than committed
    (faust commits the next offset to read, so a partition that is done has both equal)."""
    position, committed = mark
    if end is not None and end > (position or 0):
        return True
    return position is not None and position > (committed or 0)


class PartitionWatch:
    """One per worker: `check()` is called from an app timer."""

    def __init__(
        self,
        app: faust.App,
        stall_after_s: float,
        excuse: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.app = app
        self.stall_after_s = stall_after_s
        # A reason the agents are waiting on purpose (Redis away: they wait for it rather than
        # guess); while there is one, nothing counts as stalled.
        self.excuse = excuse
        self.seen: dict[TP, Seen] = {}
        self.stalled: dict[TP, dict[str, Any]] = {}
        self.repairs_in_a_row = 0  # reset once nothing is stalled
        self.last_repair = float("-inf")

    def _stream_partitions(self) -> set[TP]:
        changelogs = set(self.app.tables.changelog_topics)
        return {tp for tp in self.app.consumer.assignment() if tp.topic not in changelogs}

    def ready(self) -> bool:
        return app_ready(self.app)

    async def check(self, now: float | None = None) -> dict[TP, dict[str, Any]]:
        """Update the stalled set from the broker's end offsets; returns it."""
        now = time.monotonic() if now is None else now
        if not self.ready() or self.excuse():
            return self._restart_clocks()  # after a rebalance or a wait, measure afresh
        tps = self._stream_partitions()
        try:
            ends = await self.app.consumer.highwaters(*tps) if tps else {}
        except Exception as exc:  # the broker is away: that is not a stall
            logger.info("end offsets unavailable (%s); stall clocks restarted", exc)
            return self._restart_clocks()
        for tp in list(self.seen):
            if tp not in tps:
                del self.seen[tp]
        stalled: dict[TP, dict[str, Any]] = {}
        for tp in tps:
            mark = self._mark(tp)
            seen = self.seen.get(tp)
            waiting = behind(mark, ends.get(tp))
            # The clock runs from when records started waiting with nothing moving: an idle
            # partition that just received a record is not stalled.
            # A partition faust paused for a full agent buffer still counts: a slow agent moves
            # its committed offset, a stuck one (a stream faust stopped feeding) does not.
            if seen is None or seen.mark != mark or not waiting:
                self.seen[tp] = Seen(mark, now)
                continue
            if now - seen.since >= self.stall_after_s:
                stalled[tp] = {
                    **describe(self.app, tp),
                    "end_offset": ends.get(tp),
                    "stalled_s": round(now - seen.since, 1),
                }
        for tp, info in stalled.items():
            if tp not in self.stalled:
                logger.error("partition stalled: records waiting, none consumed: %s", info)
        if stalled and not self.stalled:
            logger.error("consumer while stalled: %s", consumer_waits(self.app))
        self.stalled = stalled
        if not stalled:
            self.repairs_in_a_row = 0
        PARTITIONS_STALLED.set(len(stalled))
        return stalled

    def _restart_clocks(self) -> dict[TP, dict[str, Any]]:
        self.seen.clear()
        self.stalled = {}
        PARTITIONS_STALLED.set(0)
        return self.stalled

    async def report(self) -> list[dict[str, Any]]:
        """Every assigned stream partition as faust and aiokafka see it (`/health?partitions=1`)."""
        tps = sorted(self._stream_partitions()) if self.app.consumer is not None else []
        ends = await self.app.consumer.highwaters(*tps) if tps else {}
        return [
            {**describe(self.app, tp), "end_offset": ends.get(tp), "mark": self._mark(tp)}
            for tp in tps
        ]

    def _mark(self, tp: TP) -> tuple[int | None, int | None]:
        """(aiokafka's next offset to fetch, faust's committed offset): either moving is
        progress."""
        return (fetch_position(self.app, tp), committed_offset(self.app, tp))

    async def reread(self, skipped: dict[TP, int]) -> None:
        """Seek partitions where faust skipped records (gap_guard) back to the committed offset,
        so the skipped records are delivered; those read twice are dropped downstream."""
        consumer: Any = self.app.consumer
        assigned = consumer.assignment() if consumer is not None else set()
        for tp, first_skipped in skipped.items():
            if tp not in assigned:
                continue  # moved to another worker: it reads from the committed offset anyway
            committed = committed_offset(self.app, tp)
            target = min(committed, first_skipped) if committed is not None else first_skipped
            await consumer.seek(tp, target)
            STALL_REPAIRS.labels("reread").inc()
            logger.error(
                "%s: faust skipped records from offset %d; re-reading from %d",
                tp,
                first_skipped,
                target,
            )

    async def repair(self) -> str:
        """Escalate, one step per stall period, until the stalled partitions move:

        1. `seek`: resume the partitions and seek them to the committed offset, or to the
           earliest one when nothing was ever committed. What the watch catches is records that
           aiokafka handed over and faust never delivered: its own re-seek at the end of a
           rebalance skips partitions without a committed offset, so they stay lost until this.
           Records read twice are dropped downstream (event-id de-duplication, member replays);
        2. `rejoin`: ask the group coordinator for a new rebalance;
        3. `exit`: stop the worker with an error, for the orchestrator to restart it (a restart
           re-reads every partition from its committed offset; nothing is lost).
        """
        now = time.monotonic()
        if not self.stalled or now - self.last_repair < self.stall_after_s:
            return "wait"
        step = self.repairs_in_a_row
        self.repairs_in_a_row += 1
        self.last_repair = now
        tps = set(self.stalled)
        consumer: Any = self.app.consumer
        if step == 0:
            action = "seek"
            consumer.resume_partitions(tps)
            never = [tp for tp in tps if committed_offset(self.app, tp) is None]
            earliest = await consumer.earliest_offsets(*never) if never else {}
            for tp in tps:
                committed = committed_offset(self.app, tp)
                await consumer.seek(tp, committed if committed is not None else earliest[tp])
        elif step == 1:
            action = "rejoin"
            aio = consumer._thread._ensure_consumer()
            aio._coordinator.request_rejoin()
        else:
            action = "exit"
        STALL_REPAIRS.labels(action).inc()
        logger.error("stalled partitions %s: repair step %s", sorted(map(str, tps)), action)
        for tp in tps:
            self.seen.pop(tp, None)  # the next check measures from the repair
        if action == "exit":  # a graceful stop commits what was processed
            os.kill(os.getpid(), signal.SIGTERM)
        return action
