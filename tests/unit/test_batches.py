"""Batch envelopes: what every hop writes must read back item by item, and fit in a record."""

from __future__ import annotations

import orjson

from contracts.batches import pack, pack_chunks, unpack


def test_an_envelope_and_a_bare_item_read_back_as_their_items():
    items = [{"event_id": f"e{i}", "n": i} for i in range(3)]
    assert unpack(pack("events", items)) == items
    assert unpack(orjson.dumps(items[0])) == [items[0]]  # a record that is one event
    assert unpack(orjson.dumps({"other": [1]})) == [{"other": [1]}]  # not an envelope: one item


def test_a_big_batch_is_split_into_records_under_the_limit_keeping_order():
    items = [{"event_id": f"e{i}", "pad": "x" * 200} for i in range(5000)]
    records = pack_chunks("events", items, max_bytes=64 * 1024)
    assert len(records) > 10 and all(len(r) <= 64 * 1024 for r in records)
    assert [e for r in records for e in unpack(r)] == items
    assert pack_chunks("events", items[:3]) == [pack("events", items[:3])]  # small: one record
    assert pack_chunks("events", []) == []
