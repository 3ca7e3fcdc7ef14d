"""Back off after a failed Kafka metadata update (aiokafka 0.14 spins without it).

While the broker is unreachable, aiokafka's producer sender asks for a metadata update, the
update fails at once (connection refused) and the sender asks again: a busy loop that takes a
whole core and writes millions of log lines per minute (aio-libs/aiokafka#496). Measured here
by `make chaos`: during a broker restart a worker wrote 700 MB of log, and on a 2-core machine the
restarting broker was starved for minutes. Waiting `retry_backoff_ms` after a failed update is
what the sender's own comment says it intends to do.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.client import AIOKafkaClient

_PATCHED = "_storepulse_backoff"


def install() -> None:
    """Idempotent; call before any aiokafka client starts."""
    if getattr(AIOKafkaClient, _PATCHED, False):
        return
    original = AIOKafkaClient._metadata_update

    async def _metadata_update(self: AIOKafkaClient, cluster_metadata: Any, topics: Any) -> bool:
        updated: bool = await original(self, cluster_metadata, topics)
        if not updated:
            await asyncio.sleep(self._retry_backoff)
        return updated

    AIOKafkaClient._metadata_update = _metadata_update
    setattr(AIOKafkaClient, _PATCHED, True)
