"""Do not let a commit of nothing crash the worker.

faust's aiokafka driver keeps only the offsets of partitions still assigned and hands the rest to
aiokafka's `commit`, which raises ValueError on an empty map; faust then crashes the consumer
thread and the whole worker ("We experienced a crash!"). Seen in `make bench-quick` when a second
worker joined and every partition with a pending commit had just been revoked. Nothing assigned
means nothing to commit: the commit is skipped, as faust does for "already rebalanced".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_PATCHED = "_storepulse_empty_commit"


def install() -> None:
    """Idempotent."""
    if getattr(AIOKafkaConsumerThread, _PATCHED, False):
        return
    original = AIOKafkaConsumerThread._commit

    async def _commit(self: AIOKafkaConsumerThread, offsets: Mapping[Any, int]) -> bool:
        assigned = self.assignment()
        if not any(tp in assigned for tp in offsets):
            return False  # every partition was revoked meanwhile
        return await original(self, offsets)

    AIOKafkaConsumerThread._commit = _commit  # type: ignore[method-assign]
    setattr(AIOKafkaConsumerThread, _PATCHED, True)
