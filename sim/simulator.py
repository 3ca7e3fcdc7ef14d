"""A mall event simulator: members with phones, app devices and MACs walking through stores.

Produces to the input topics with a plain aiokafka producer, at a target rate for a duration;
`bad_ratio` mixes in malformed records so the dead-letter path is always exercised.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from state.stores import Store


@dataclass
class SimMember:
    member_id: str
    app_device_id: str
    openid: str
    tier: str


@dataclass
class Simulator:
    bootstrap: str
    stores: list[Store]
    members: int = 200
    rate: float = 20.0
    duration: float = 30.0
    bad_ratio: float = 0.02
    anonymous_ratio: float = 0.1
    seed: int = 7
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        tiers = ["pink", "white", "black", "gold"]
        self.population = [
            SimMember(f"m-{i:06d}", f"dev-{i:06d}", f"oid-{i:06d}", self.rng.choice(tiers))
            for i in range(self.members)
        ]

    def checkin(self, now_ms: int) -> dict[str, Any]:
        member = self.rng.choice(self.population)
        store = self.rng.choice(self.stores)
        event: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            "ts": now_ms,
            "kind": "checkin",
            "store_id": store.id,
            "channel": self.rng.choice(["app", "mini_program", "qr"]),
        }
        roll = self.rng.random()
        if roll < self.anonymous_ratio:
            event["app_device_id"] = f"dev-anon-{self.rng.randrange(10_000):05d}"
        elif roll < 0.5:
            event["member_id"] = member.member_id
        else:
            event["member_id"] = member.member_id
            event["app_device_id"] = member.app_device_id
        return event

    def bad_record(self, now_ms: int) -> bytes:
        choice = self.rng.randrange(4)
        if choice == 0:
            return b"{not json"
        if choice == 1:
            return orjson.dumps(
                {
                    "event_id": str(uuid.uuid4()),
                    "ts": "yesterday",
                    "store_id": "sh-jingan",
                    "member_id": "m-000001",
                }
            )
        if choice == 2:
            return orjson.dumps(
                {"event_id": str(uuid.uuid4()), "ts": now_ms, "store_id": "sh-jingan"}
            )  # no identifier
        return orjson.dumps([1, 2, 3])

    def next_record(self, now_ms: int) -> tuple[str, bytes | None, bytes]:
        if self.rng.random() < self.bad_ratio:
            self.counts["bad"] += 1
            return "checkins", None, self.bad_record(now_ms)
        event = self.checkin(now_ms)
        self.counts["checkin"] += 1
        key = (event.get("member_id") or event.get("app_device_id") or "").encode()
        return "checkins", key, orjson.dumps(event)

    async def run(self, stop: asyncio.Event | None = None) -> Counter[str]:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            start = time.monotonic()
            sent = 0
            while time.monotonic() - start < self.duration and not (stop and stop.is_set()):
                due = int((time.monotonic() - start) * self.rate) + 1
                while sent < due:
                    topic, key, value = self.next_record(int(time.time() * 1000))
                    await producer.send(topic, value=value, key=key)
                    sent += 1
                await asyncio.sleep(min(0.05, 1 / max(self.rate, 1)))
            await producer.flush()
        finally:
            await producer.stop()
        self.counts["total"] = sent
        return self.counts
