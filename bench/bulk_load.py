"""Loads N registered members straight into Redis and the member-state changelog.

Registering a million members through the pipeline takes about an hour on two cores (two
records each, plus the `identified` hand-overs they cause), which is not what the benchmark
measures. This writes what that pipeline would leave behind, so a worker starts with N members
and restores them from the changelog like after any restart:

- Redis: the identity bindings `{prefix}:id:{app_device_id:...}` and `{member_card:...}`, as
  `IdentityResolver.link` writes them (`SET NX`: an existing binding is kept);
- Kafka: one compacted `member-state` changelog record per member, keyed (JSON string) and
  partitioned (murmur2 of the raw member id, as on member-events) like the table's own writes.

The record is made by the real edge and fold (validation, `canonical`, `triggers.pipeline.step`)
from the same registration records the pipeline path sends, once per tier, then copied with the
member id replaced; tests/integration/test_bulk_load.py checks a bulk-loaded member against one
registered through the pipeline.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from contracts.inputs import IDENTIFIER_FIELDS
from core.settings import Settings
from edge.canonical import canonical
from edge.validation import Accepted, validate
from infra.kafka_admin import create_topics
from state.identity import identifiers_of
from state.loyalty import load_loyalty
from state.member_state import StateContext
from state.redis_store import key
from state.stores import load_stores
from state.timers import partition_of
from triggers.engine import TriggerSet
from triggers.pipeline import step

TEMPLATE_ID = "m-TEMPLATE"


def member_id(i: int) -> str:
    return f"m-{i:07d}"


def tier(i: int) -> str:
    return "gold" if i % 10 == 0 else "pink"


def registration_records(i: int, ts: int, mid: str | None = None) -> list[tuple[str, bytes, bytes]]:
    """Member i's registration as input records (topic, key, value): CRM profile + app link."""
    mid = mid or member_id(i)
    profile = {
        "event_id": f"p-{i}",
        "ts": ts,
        "kind": "profile",
        "member_id": mid,
        "tier": tier(i),
        "consent": {"push": True, "wechat": True},
    }
    link = {
        "event_id": f"r-{i}",
        "ts": ts,
        "kind": "registration",
        "member_id": mid,
        "app_device_id": f"dev-{i:07d}",
        "member_card": f"card-{i:07d}",
    }
    return [
        ("members", mid.encode(), orjson.dumps(profile)),
        ("identity", mid.encode(), orjson.dumps(link)),
    ]


def registration_events(settings: Settings, i: int, ts: int, mid: str) -> list[dict[str, Any]]:
    """What the edge makes of those records (validation, then canonical), as conditions see it."""
    out = []
    for topic, _key, value in registration_records(i, ts, mid):
        result = validate(topic, value, ts, settings.max_message_bytes)
        assert isinstance(result, Accepted), result
        event = result.event
        fields = {f: getattr(event, f, None) for f in IDENTIFIER_FIELDS}
        idents = identifiers_of(fields, settings.hash_secret)
        canon = canonical(topic, event, mid, idents)
        record: dict[str, Any] = dict(canon)
        out.append({**canon["attrs"], **{k: record[k] for k in _EVENT_FIELDS}})
    return out


_EVENT_FIELDS = ("event_id", "member_id", "type", "ts", "store_id")  # agents.members.event_scope


def templates(settings: Settings, ts: int) -> dict[str, bytes]:
    """Serialized member record per tier, for the placeholder member id."""
    ctx = StateContext(load_stores(settings.stores_path), load_loyalty(settings.loyalty_path))
    out: dict[str, bytes] = {}
    for i in (0, 1):  # a gold and a pink member
        record = None
        for event in registration_events(settings, i, ts, TEMPLATE_ID):
            record = step(record, event, TriggerSet(), ctx, ts).record
        out[tier(i)] = orjson.dumps(record)
    return out


async def bulk_load(
    settings: Settings,
    members: int,
    chunk: int = 20_000,
    progress: bool = True,
    ts: int | None = None,
) -> dict[str, float]:
    """Write N members registered at `ts`; returns seconds spent on Redis and on Kafka."""
    ts = int(time.time() * 1000) if ts is None else ts
    records = templates(settings, ts)
    placeholder = TEMPLATE_ID.encode()
    changelog = f"{settings.app_id}-member-state-changelog"
    await create_topics(
        settings.kafka_bootstrap,
        {changelog: {"cleanup.policy": "compact"}},
        settings.partitions,
        settings.replication,
    )
    redis = aioredis.Redis.from_url(settings.redis_url)
    started = time.monotonic()
    try:
        for lo in range(0, members, chunk):
            pipe = redis.pipeline(transaction=False)
            for i in range(lo, min(members, lo + chunk)):
                mid = member_id(i).encode()
                pipe.set(key(settings, "id", f"app_device_id:dev-{i:07d}"), mid, nx=True)
                pipe.set(key(settings, "id", f"member_card:card-{i:07d}"), mid, nx=True)
            await pipe.execute()
            if progress and lo and lo % 200_000 == 0:
                print(f"    redis: {lo:,} members", flush=True)
    finally:
        await redis.aclose()
    redis_s = time.monotonic() - started
    started = time.monotonic()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        linger_ms=50,
        max_batch_size=1 << 20,
        compression_type=None,
        acks=1,
    )
    await producer.start()
    partitions = list(range(settings.partitions))
    try:
        for i in range(members):
            mid = member_id(i).encode()
            value = records[tier(i)].replace(placeholder, mid)
            # faust writes a table row to the partition of the event being processed, i.e. of
            # the raw member id on member-events; the changelog key itself is JSON.
            partition = partition_of(mid.decode(), len(partitions))
            await producer.send(
                changelog, value, key=orjson.dumps(mid.decode()), partition=partition
            )
            if progress and i and i % 200_000 == 0:
                print(f"    changelog: {i:,} members", flush=True)
        await producer.flush()
    finally:
        await producer.stop()
    return {"redis_s": round(redis_s, 1), "kafka_s": round(time.monotonic() - started, 1)}
