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
import orjson

logger = logging.getLogger("storepulse.batch_io")
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z  # faust.utils.json.dumps with orjson


async def produce(
    app: faust.App,
    topic: str,
    value: bytes | None,
    partition: int | None,
    key: bytes | None = None,
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

    def get(self, partition: int, key: str) -> Any:
        """The row, read from `partition`'s store as faust's RocksDB `_get` does inside a stream
        (that partition's database), without faust's mapping layers: a miss there raised and
        caught a KeyError, and a member event reads two rows."""
        store = self._store
        if not hasattr(store, "_db_for_partition"):
            return self.table.get(key)
        raw = store._db_for_partition(partition).get(self._key(key))
        if raw is None:
            return None
        table: Any = self.table
        if table.value_serializer in ("json", "orjson"):
            return orjson.loads(raw)
        return self.app.serializers.loads_value(
            table.value_type, raw, serializer=table.value_serializer
        )

    async def write(self, partition: int, rows: Mapping[str, Any]) -> None:
        """Put each row into `partition`'s store and queue its changelog record (None: delete)."""
        if not rows:
            return
        store = self._store
        table: Any = self.table
        db = store._db_for_partition(partition) if hasattr(store, "_db_for_partition") else None
        topic = table.changelog_topic.get_topic_name()
        encoded = [(key, self._key(key), self._value(value), value) for key, value in rows.items()]
        if db is not None:  # RocksDB: one write batch into the partition's own database
            write = _write_batch(store)
            for _, k, v, _ in encoded:
                if v is None:
                    write.delete(k)
                else:
                    write.put(k, v)
                store._key_index[k] = partition
            db.write(write)
        else:  # the memory store keeps Python values
            for key, _, _, value in encoded:
                if value is None:
                    store.data.pop(key, None)
                else:
                    store.data[key] = value
        last: asyncio.Future[Any] | None = None
        for _, k, v, _ in encoded:
            last = await produce(self.app, topic, v, partition, k)
        if last is not None:
            last.add_done_callback(self._persisted)

    def _key(self, key: Any) -> bytes:
        """faust's changelog key (Table.send_changelog -> Topic.prepare_key): its `json` of a
        string is orjson's (tests/unit/test_batch_io.py compares them), at a tenth of the cost."""
        table: Any = self.table
        if table.key_serializer == "json" and isinstance(key, str):
            return orjson.dumps(key)
        out = self.app.serializers.dumps_key(table.key_type, key, serializer=table.key_serializer)
        if out is None:
            raise TypeError("a table key cannot be None")
        return out

    def _value(self, value: Any) -> bytes | None:
        """faust's changelog value: for a dict under faust's `json` codec (orjson inside, with
        these options) or ours, the same bytes without faust's codec layers."""
        if value is None:
            return None
        table: Any = self.table
        if table.value_serializer in ("json", "orjson") and isinstance(value, dict):
            return orjson.dumps(value, option=_OPTIONS)
        out: bytes | None = self.app.serializers.dumps_value(
            table.value_type, value, serializer=table.value_serializer
        )
        return out

    def _persisted(self, fut: asyncio.Future[Any]) -> None:
        """faust keeps the changelog offset in the store to know where recovery starts."""
        if fut.cancelled() or fut.exception() is not None:
            return  # the send error surfaces at the commit's flush
        res = fut.result()
        try:
            self._store.set_persisted_offset(res.topic_partition, res.offset)
        except Exception:  # never break the producer's callback chain
            logger.exception("could not record the changelog offset of %s", self.table.name)


def _write_batch(store: Any) -> Any:
    """A RocksDB write batch of the binding faust's store uses (rocksdict or python-rocksdb)."""
    if getattr(store, "use_rocksdict", True):
        import rocksdict

        return rocksdict.WriteBatch(raw_mode=True)
    import rocksdb

    return rocksdb.WriteBatch()
