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

import logging
from typing import Any

from faust.transport.consumer import Consumer

logger = logging.getLogger("storepulse.gap_guard")

_PATCHED = "_storepulse_gap_guard"


class GapPolicy:
    """Remembers the gaps refused once; the second sighting of the same one is accepted."""

    def __init__(self) -> None:
        self.refused: set[tuple[Any, int]] = set()
        self.reread: dict[Any, int] = {}  # partitions to seek back, with the first skipped offset

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
        self.reread[tp] = min(offset_from, self.reread.get(tp, offset_from))
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
