"""Do not let faust acknowledge records it skipped as an offset "gap" the first time it sees one.

faust treats a jump between two offsets it delivers on a partition as a gap and acknowledges the
records in between (meant for transaction markers and compaction, which StorePulse's stream topics
do not have). `make chaos` (worker-kill) saw faust skip records fetched in the first second after
a worker start (not delivered to any agent) and then commit past them as such a gap: 23 input
events lost without a trace. The first time a gap is seen it is refused: the commit stays before
it, the partition watch seeks back within seconds, and the records are read again. A gap that
comes back after that re-read is real (retention, compaction, markers) and is accepted, so a
worker can never loop on one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from faust.transport.consumer import Consumer

logger = logging.getLogger("storepulse.gap_guard")

_PATCHED = "_storepulse_gap_guard"


class GapPolicy:
    """Remembers the gaps refused once; the second sighting of the same one is accepted."""

    def __init__(self) -> None:
        self.refused: set[tuple[Any, int]] = set()
        self.reread: dict[Any, int] = {}  # partitions to seek back, with the first skipped offset

    def queue_reread(self, tp: Any, first_skipped: int) -> None:
        self.reread[tp] = min(first_skipped, self.reread.get(tp, first_skipped))

    def take_rereads(self) -> dict[Any, int]:
        out, self.reread = self.reread, {}
        return out

    def accept(self, tp: Any, offset_from: int, offset_to: int) -> bool:
        if (tp, offset_from) in self.refused:
            self.refused.discard((tp, offset_from))
            logger.warning(
                "offsets %d-%d of %s missing again after a re-read: a real gap, acknowledged",
                offset_from,
                offset_to,
                tp,
            )
            return True
        self.refused.add((tp, offset_from))
        self.queue_reread(tp, offset_from)
        logger.error(
            "faust skipped offsets %d-%d of %s without delivering them; not acknowledged, so "
            "the partition watch re-reads them",
            offset_from,
            offset_to,
            tp,
        )
        return False


policy = GapPolicy()


def install() -> None:
    """Idempotent; call before the consumer starts."""
    if getattr(Consumer, _PATCHED, False):
        return
    original = Consumer._add_gap

    async def _add_gap(self: Consumer, tp: Any, offset_from: int, offset_to: int) -> None:
        if policy.accept(tp, offset_from, offset_to):
            await original(self, tp, offset_from, offset_to)

    Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    setattr(Consumer, _PATCHED, True)


class CommitGuard:
    """faust commits the first run of consecutive acknowledged offsets of a partition. It checks
    that the run starts where the last commit ended only when there was a commit, and even then
    lets one record through (`min(acked) - committed > 1`). So records faust skipped at the head
    of a partition (never delivered) were committed past: in `rebalance-kill` a joining worker
    committed offset 104 of a never-committed partition after processing records from 90 on.
    Here a run is committed only if it starts at the committed offset, or, for a partition never
    committed, at its first offset (looked up once); otherwise nothing is, the partition stays
    behind, and a re-read is queued (the partition watch seeks back) once a partition has been
    held `reread_after_s`: records at the head skipped, not merely still being processed. Left to
    the watch's stall detection, a rebalanced partition sat 30 s behind (`2w-200t` bench)."""

    def __init__(self, reread_after_s: float = 5.0) -> None:
        self.starts: dict[Any, int] = {}
        self.pending: set[Any] = set()
        self.tasks: set[asyncio.Future[None]] = set()
        self.reread_after_s = reread_after_s
        self.held_since: dict[Any, tuple[int, float]] = {}  # tp -> (expected offset, since)

    def expected(self, consumer: Consumer, tp: Any) -> int | None:
        committed = consumer._committed_offset.get(tp)
        if committed is not None:
            return int(committed)
        if tp not in self.starts and tp not in self.pending:
            self.pending.add(tp)
            task = asyncio.ensure_future(self._look_up(consumer, tp))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return self.starts.get(tp)

    async def _look_up(self, consumer: Consumer, tp: Any) -> None:
        try:
            self.starts[tp] = int((await consumer.earliest_offsets(tp))[tp])
        except Exception as exc:  # asked again at the next commit
            logger.info("first offset of %s unavailable (%s)", tp, exc)
        finally:
            self.pending.discard(tp)

    def allows(self, consumer: Consumer, tp: Any, now: float | None = None) -> bool:
        acked = consumer._acked[tp]
        if not acked:
            return True
        expected = self.expected(consumer, tp)
        head = min(acked)
        if expected is not None and (
            head <= expected
            # a gap faust was allowed to acknowledge covers the head
            or any(iv.begin <= expected < iv.end for iv in consumer._gap[tp])
        ):
            self.held_since.pop(tp, None)
            return True
        if expected is None:
            return False  # the first offset is being looked up
        now = time.monotonic() if now is None else now
        since = self.held_since.get(tp)
        if since is None or since[0] != expected:
            self.held_since[tp] = (expected, now)
            logger.warning(
                "%s: not committing past offsets %d-%d, never acknowledged (yet)",
                tp,
                expected,
                head - 1,
            )
        elif now - since[1] >= self.reread_after_s:
            self.held_since[tp] = (expected, now)  # at most one re-read per period
            policy.queue_reread(tp, expected)
            logger.error(
                "%s: offsets %d-%d skipped (later ones acknowledged for %.0f s); re-reading them",
                tp,
                expected,
                head - 1,
                now - since[1],
            )
        return False


commits = CommitGuard()


def install_commit_guard() -> None:
    """Idempotent; call before the consumer starts."""
    if getattr(Consumer, _PATCHED + "_commit", False):
        return
    original = Consumer._new_offset

    def _new_offset(self: Consumer, tp: Any) -> int | None:
        if not commits.allows(self, tp):
            return None
        result: int | None = original(self, tp)
        return result

    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    setattr(Consumer, _PATCHED + "_commit", True)
