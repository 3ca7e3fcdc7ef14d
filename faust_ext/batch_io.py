"""Batch-sized writes around faust's per-message costs: records through the producer, table rows
straight into the store plus one changelog record each.

faust's `Topic.send` costs ~140 µs (aiokafka's own `send` ~11 µs) and a table write ~120-170 µs
(store put, `on_key_set`, changelog `send_soon`, the value serialised twice), whatever the record
holds. Here a value is serialised once by the caller, a table row is put into the partition's
store and sent to the changelog with faust's own key/value encoding, so recovery and standby
replicas read it as if faust had written it, and the persisted offset is recorded as faust's
`_on_changelog_sent` does. Durability is the same: faust flushes the producer before every
commit of the consumed offsets (`Consumer.commit`), so nothing is committed ahead of its writes.

Not inside Kafka transactions: STOREPULSE_PROCESSING_GUARANTEE only allows at_least_once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import faust

logger = logging.getLogger("storepulse.batch_io")


async def produce(
    app: faust.App, topic: str, value: bytes, partition: int | None, key: bytes | None = None
) -> asyncio.Future[Any]:
    """Queue one record (Kafka name `topic`); the returned future resolves when it is written."""
    fut = await app.producer.send(topic, key, value, partition, None, None)
    return fut  # type: ignore[return-value]


class TableRows:
    """Rows of one faust Table written per batch: `write(partition, {key: value or None})`."""

    def __init__(self, app: faust.App, table: Any) -> None:
        self.app = app
        self.table = table

    @property
    def _store(self) -> Any:
        return self.table.data

    def get(self, key: str) -> Any:
        return self.table.get(key)

    async def write(self, partition: int, rows: Mapping[str, Any]) -> None:
        """Put each row into `partition`'s store and queue its changelog record (None: delete)."""
        if not rows:
            return
        store = self._store
        table: Any = self.table
        serializers = self.app.serializers
        db = store._db_for_partition(partition) if hasattr(store, "_db_for_partition") else None
        topic = table.changelog_topic.get_topic_name()
        last: asyncio.Future[Any] | None = None
        for key, value in rows.items():
            # faust's changelog encoding (Table.send_changelog -> Topic.prepare_key/value)
            k = serializers.dumps_key(table.key_type, key, serializer=table.key_serializer)
            v = (
                None
                if value is None
                else serializers.dumps_value(
                    table.value_type, value, serializer=table.value_serializer
                )
            )
            if db is not None:  # RocksDB: the partition's own database, as faust's _set does
                if v is None:
                    db.delete(k)
                else:
                    db.put(k, v)
                store._key_index[k] = partition
            elif value is None:  # the memory store keeps Python values
                store.data.pop(key, None)
            else:
                store.data[key] = value
            last = await produce(self.app, topic, v, partition, k)  # type: ignore[arg-type]
        if last is not None:
            last.add_done_callback(self._persisted)

    def _persisted(self, fut: asyncio.Future[Any]) -> None:
        """faust keeps the changelog offset in the store to know where recovery starts."""
        if fut.cancelled() or fut.exception() is not None:
            return  # the send error surfaces at the commit's flush
        res = fut.result()
        try:
            self._store.set_persisted_offset(res.topic_partition, res.offset)
        except Exception:  # never break the producer's callback chain
            logger.exception("could not record the changelog offset of %s", self.table.name)
