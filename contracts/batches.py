"""The batch envelope of every StorePulse topic: one record carries a list of items.

faust charges ~150-200 µs per consumed record and ~140 µs per send whatever the record holds, so
every hop carries a batch: `{"events": [...]}` on input, member-events and derived-events,
`{"actions": [...]}`, `{"decisions": [...]}`, `{"deliveries": [...]}`. A record that is one bare
item is still read (inputs from sources that do not batch, an older worker, a hand-made test).
Pure: consumers outside the worker (the bench, the demo, the tests, a data team) share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

ENVELOPE_KEYS = ("events", "actions", "decisions", "deliveries", "conversions")


def pack(kind: str, items: Sequence[Any]) -> bytes:
    """One record's value for `items` of `kind` (one of ENVELOPE_KEYS)."""
    return orjson.dumps({kind: items})


# A bigger batch is split: two fit in one producer batch (STOREPULSE_PRODUCER_MAX_BATCH_BYTES,
# 512 KiB), far under the producer's 1 MB request and the broker's 1 MiB message limits.
RECORD_BYTES = 256 * 1024


def pack_chunks(kind: str, items: Sequence[Any], max_bytes: int = RECORD_BYTES) -> list[bytes]:
    """`items` in as few envelopes as fit in `max_bytes` each (an item bigger than that alone).
    Each item is serialised once; a backlog's batch of 50,000 events must not become one record
    that Kafka refuses."""
    head, tail = b'{"' + kind.encode() + b'":[', b"]}"
    out: list[bytes] = []
    parts: list[bytes] = []
    size = len(head) + len(tail)
    for item in items:
        encoded = orjson.dumps(item)
        if parts and size + len(encoded) + 1 > max_bytes:
            out.append(head + b",".join(parts) + tail)
            parts, size = [], len(head) + len(tail)
        parts.append(encoded)
        size += len(encoded) + 1
    if parts:
        out.append(head + b",".join(parts) + tail)
    return out


def items_of(data: Any) -> list[Any]:
    """The items of a decoded record: an envelope's list, or the record itself as one item."""
    if isinstance(data, dict) and len(data) == 1:
        ((name, value),) = data.items()
        if name in ENVELOPE_KEYS and isinstance(value, list):
            return value
    return [data]


def unpack(value: bytes | None) -> list[Any]:
    """Items of a raw record value (orjson.JSONDecodeError on bytes that are not JSON)."""
    return items_of(orjson.loads(value or b"null"))
