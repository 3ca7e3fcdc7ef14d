"""History import: past POS records, CRM profiles and identity links from CSV or JSON Lines,
through the same edge as live events (`storepulse import pos|members|identity FILE`).

Each row becomes an input event marked `history`: the edge accepts it whatever its age (the
real-time limit is for live feeds) and remembers its id for STOREPULSE_IMPORT_DEDUP_S, and the
member agent folds it into member state without evaluating any trigger. Rows are sent in time
order, each on the input partition of its identifier, so a member's refunds follow their sales,
in batch envelopes (profiles one per record, keyed by member id: `members` is compacted).
Memory stays bounded whatever the file's size (years of a national chain's receipts): rows are
sorted in runs of STOREPULSE_IMPORT_SORT_ROWS written to a temporary folder and merged as they
are sent, with at most a few thousand sends in flight.
A row without an `event_id` gets one from its content, so importing the same file twice
changes nothing. Rows the edge would refuse are not sent: they go to FILE.rejected.jsonl with
their line and the reason.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from contracts.batches import pack_chunks
from contracts.inputs import IDENTIFIER_FIELDS, INPUT_SCHEMAS
from core.settings import Settings
from edge.validation import Policy, Rejected, validate
from state.loyalty import load_loyalty
from state.stores import accepts_unknown_stores, load_stores
from state.timers import partition_of

TOPICS = {"pos": "pos", "members": "members", "identity": "identity"}
DEFAULT_KIND = {"pos": "sale", "members": "profile", "identity": "registration"}
_NUMBERS = {"total": float, "price": float, "qty": int}
_JSON_COLUMNS = ("items", "consent", "tags")  # CSV cells holding JSON (or `a;b` lists for tags)


def moment(value: Any) -> int:
    """A row's `ts`: epoch milliseconds, or an ISO date or time (UTC unless it says)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return int(parsed.timestamp() * 1000)


def _csv_row(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in row.items():
        if name is None or raw is None or raw.strip() == "":
            continue
        value: Any = raw.strip()
        if name in _NUMBERS:
            try:
                value = _NUMBERS[name](value)
            except ValueError:
                pass  # the schema names the field
        elif name in _JSON_COLUMNS:
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                value = [v.strip() for v in value.split(";") if v.strip()]
        elif name == "coupons":
            value = [v.strip() for v in value.split(";") if v.strip()]
        out[name] = value
    return out


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, row) of a CSV file with a header, or of a JSON Lines file (.jsonl)."""
    if path.suffix in (".jsonl", ".ndjson", ".json"):
        with path.open("rb") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield n, orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        yield n, Rejected("not_json", f"not valid JSON: {exc}")
        return
    with path.open(newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            yield n, _csv_row(row)


def to_event(topic: str, row: Any) -> dict[str, Any] | Rejected:
    """The input event a row stands for, marked `history`."""
    if isinstance(row, Rejected):
        return row
    if not isinstance(row, dict):
        return Rejected("not_object", f"expected an object, got {type(row).__name__}")
    event = {"kind": DEFAULT_KIND[topic], **row, "history": True}
    if "ts" not in event:
        return Rejected("schema", "ts: missing (epoch ms or an ISO date/time)")
    try:
        event["ts"] = moment(event["ts"])
    except (ValueError, OverflowError):
        return Rejected("schema", f"ts: {str(event['ts'])[:40]!r} is not a time")
    if not event.get("event_id"):
        digest = hashlib.blake2b(orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=12)
        event["event_id"] = f"imp-{topic}-{digest.hexdigest()}"
    return event


@dataclass
class Summary:
    topic: str
    read: int = 0
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    rejected_file: Path | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"import {self.topic}: {self.read} rows read, {self.sent} sent, "
            f"{sum(self.rejected.values())} rejected ({self.seconds:.1f} s)"
        ]
        for reason, n in self.rejected.most_common():
            out.append(f"  rejected {reason}: {n}")
        if self.rejected_file is not None:
            out.append(f"  rejected rows with their line and reason: {self.rejected_file}")
        out.append(
            "  the edge folds them into member state without firing triggers; rows imported "
            "before are recognised and change nothing"
        )
        return out


def _identifier(event: dict[str, Any]) -> str:
    for name in IDENTIFIER_FIELDS:
        if event.get(name):
            return f"{name}:{event[name]}"
    return str(event.get("store_id") or "")


def _ts(event: dict[str, Any]) -> int:
    return int(event["ts"])


class TimeOrder:
    """Events given in file order, read back in time order (stable: a file's order within the
    same millisecond). At most `rows` are held in memory: beyond that, sorted runs go to files
    in `folder` and are merged as they are read."""

    def __init__(self, folder: Path, rows: int) -> None:
        self.folder, self.rows = folder, rows
        self.buffer: list[dict[str, Any]] = []
        self.runs: list[Path] = []
        self.count = 0

    def add(self, event: dict[str, Any]) -> None:
        self.buffer.append(event)
        self.count += 1
        if len(self.buffer) >= self.rows:
            self._spill()

    def _spill(self) -> None:
        self.buffer.sort(key=_ts)
        run = self.folder / f"run-{len(self.runs):05d}.jsonl"
        with run.open("wb") as out:
            for event in self.buffer:
                out.write(orjson.dumps(event) + b"\n")
        self.runs.append(run)
        self.buffer = []

    @staticmethod
    def _read(run: Path) -> Iterator[dict[str, Any]]:
        with run.open("rb") as lines:
            for line in lines:
                yield orjson.loads(line)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.runs:
            yield from sorted(self.buffer, key=_ts)
            return
        if self.buffer:
            self._spill()
        # heapq.merge takes equal keys from earlier runs first: runs are consecutive slices
        # of the file, so the order stays stable across them too
        yield from heapq.merge(*(self._read(r) for r in self.runs), key=_ts)


def prepare(
    topic: str, path: Path, settings: Settings, now_ms: int, folder: Path
) -> tuple[TimeOrder, Summary]:
    """Every row of the file checked as the edge will check it; the good ones in time order
    (sorted runs in `folder` when there are more than STOREPULSE_IMPORT_SORT_ROWS)."""
    if topic not in INPUT_SCHEMAS or topic not in TOPICS:
        raise ValueError(f"import pos, members or identity, not {topic!r}")
    stores = load_stores(settings.stores_path)
    loyalty = load_loyalty(settings.loyalty_path)
    policy = Policy(
        max_past_ms=now_ms,
        stores=None if accepts_unknown_stores(settings.stores_path) else frozenset(stores),
        currency=loyalty.currency,
        rates=tuple(sorted(loyalty.exchange_rates.items())),
    )
    summary = Summary(topic)
    good = TimeOrder(folder, settings.import_sort_rows)
    rejected: list[bytes] = []
    for line, row in read_rows(path):
        summary.read += 1
        event = to_event(topic, row)
        if not isinstance(event, Rejected):
            raw = orjson.dumps(event)
            verdict = validate(topic, raw, now_ms, settings.max_message_bytes, policy=policy)
            if isinstance(verdict, Rejected):
                event = verdict
        if isinstance(event, Rejected):
            summary.rejected[event.reason] += 1
            rejected.append(
                orjson.dumps(
                    {"line": line, "reason": event.reason, "message": event.message, "row": row}
                    if not isinstance(row, Rejected)
                    else {"line": line, "reason": event.reason, "message": event.message}
                )
            )
            continue
        good.add(event)
    if rejected:
        summary.rejected_file = path.with_name(path.name + ".rejected.jsonl")
        summary.rejected_file.write_bytes(b"\n".join(rejected) + b"\n")
    return good, summary


def progress_bar(done: int, total: int, out: Any = sys.stderr) -> None:
    width = 30
    filled = width * done // max(total, 1)
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows")
    if done >= total:
        out.write("\n")
    out.flush()


IN_FLIGHT = 2000  # sends awaiting Kafka's acknowledgement at once


async def send(
    topic: str,
    events: Iterable[dict[str, Any]],
    total: int,
    settings: Settings,
    progress: Callable[[int, int], None] | None = progress_bar,
) -> int:
    """Produce the events as batch envelopes, each on its identifier's input partition, in
    order; returns how many were acknowledged. Envelopes fill per partition as the events come
    (in time order), so a member's events keep their order and memory stays bounded."""
    producer = AIOKafkaProducer(**settings.kafka(), acks="all", enable_idempotence=True)
    await producer.start()
    name = settings.topic_prefix + TOPICS[topic]
    pending: deque[tuple[Any, int]] = deque()
    sent = 0

    async def settle(keep: int) -> None:
        nonlocal sent
        while len(pending) > keep:
            fut, n = pending.popleft()
            await fut
            sent += n
            if progress and n:
                progress(sent, total)

    async def flush(p: int, chunk: list[dict[str, Any]]) -> None:
        values = pack_chunks("events", chunk, settings.max_batch_bytes)
        for i, value in enumerate(values):
            n = len(chunk) if i == len(values) - 1 else 0  # counted with its last record
            pending.append((await producer.send(name, value, partition=p), n))
        await settle(IN_FLIGHT)

    try:
        buffers: dict[int, list[dict[str, Any]]] = {}
        for event in events:
            p = partition_of(_identifier(event), settings.partitions)
            if topic == "members":  # compacted by member id: one keyed record per profile
                value, key = orjson.dumps(event), str(event["member_id"]).encode()
                pending.append((await producer.send(name, value, key=key, partition=p), 1))
                await settle(IN_FLIGHT)
                continue
            buffer = buffers.setdefault(p, [])
            buffer.append(event)
            if len(buffer) >= settings.max_batch_events:
                await flush(p, buffer)
                buffers[p] = []
        for p, buffer in buffers.items():
            if buffer:
                await flush(p, buffer)
        await settle(0)
    finally:
        await producer.stop()
    return sent


async def import_file(topic: str, path: Path, settings: Settings) -> Summary:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="storepulse-import-") as folder:
        events, summary = prepare(topic, path, settings, int(time.time() * 1000), Path(folder))
        summary.sent = await send(topic, events, events.count, settings) if events.count else 0
    summary.seconds = time.monotonic() - started
    return summary
