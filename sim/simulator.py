"""A mall event simulator: members with phones, app devices and MACs walking through stores.

Produces to the input topics with a plain aiokafka producer, at a target rate for a duration.
Members are registered first (profiles and identity links), then shoppers check in, are seen by
WiFi and beacons, and buy things; `bad_ratio` mixes in malformed records so the dead-letter path
is always exercised.
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

Record = tuple[str, bytes | None, bytes]

CATEGORIES = {
    "cosmetics": ["lancome", "estee", "shiseido"],
    "fashion": ["uniqlo", "zara", "cos"],
    "food": ["starbucks", "heytea", "xibei"],
    "electronics": ["apple", "huawei", "xiaomi"],
    "kids": ["lego", "balabala"],
    "general": ["house"],
}


@dataclass
class SimMember:
    member_id: str
    app_device_id: str
    openid: str
    mac: str
    phone: str
    card: str
    tier: str


def _mac(rng: random.Random, randomized: bool = False) -> str:
    octets = [rng.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] | 0x02) if randomized else (octets[0] & 0xFC)
    return ":".join(f"{o:02x}" for o in octets)


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
            SimMember(
                member_id=f"m-{i:06d}",
                app_device_id=f"dev-{i:06d}",
                openid=f"oid-{i:06d}",
                mac=_mac(self.rng),
                phone=f"139{i:08d}",
                card=f"card-{i:08d}",
                tier=self.rng.choice(tiers),
            )
            for i in range(self.members)
        ]

    def _base(self, kind: str, now_ms: int) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "ts": now_ms, "kind": kind}

    def registration(self, member: SimMember, now_ms: int) -> list[Record]:
        profile = {
            **self._base("profile", now_ms),
            "member_id": member.member_id,
            "tier": member.tier,
            "birthday": f"19{self.rng.randrange(60, 99)}-{self.rng.randrange(1, 13):02d}-15",
            "consent": {"push": True, "sms": self.rng.random() < 0.6, "wechat": True},
            "tags": self.rng.sample(["beauty", "family", "foodie", "tech", "vip"], 2),
            "home_store": self.rng.choice(self.stores).id,
        }
        link = {
            **self._base("registration", now_ms),
            "member_id": member.member_id,
            "member_card": member.card,
            "phone": member.phone,
            "app_device_id": member.app_device_id,
            "openid": member.openid,
        }
        key = member.member_id.encode()
        return [("members", key, orjson.dumps(profile)), ("identity", key, orjson.dumps(link))]

    def checkin(self, member: SimMember, store: Store, now_ms: int) -> Record:
        event = {
            **self._base("checkin", now_ms),
            "store_id": store.id,
            "channel": self.rng.choice(["app", "mini_program", "qr"]),
        }
        if self.rng.random() < self.anonymous_ratio:
            event["app_device_id"] = f"dev-anon-{self.rng.randrange(10_000):05d}"
        else:
            event["member_id"] = member.member_id
            event["app_device_id"] = member.app_device_id
        key = str(event.get("member_id") or event["app_device_id"]).encode()
        return "checkins", key, orjson.dumps(event)

    def wifi(self, member: SimMember, store: Store, now_ms: int) -> Record:
        kind = self.rng.choices(["probe", "association", "portal_login"], [6, 3, 1])[0]
        zone = self.rng.choice(store.zones).id if store.zones else None
        randomized = kind == "probe" and self.rng.random() < 0.5
        event: dict[str, Any] = {
            **self._base(kind, now_ms),
            "store_id": store.id,
            "ap_id": f"ap-{zone or 'main'}",
            "mac": _mac(self.rng, randomized=True) if randomized else member.mac,
            "rssi": self.rng.randrange(-90, -35),
            "zone_id": zone,
        }
        if kind == "portal_login":
            event["phone"] = member.phone
        return "wifi", f"{store.id}:{event['ap_id']}".encode(), orjson.dumps(event)

    def beacon(self, member: SimMember, store: Store, now_ms: int) -> Record:
        zone = self.rng.choice(store.zones).id if store.zones else "main"
        event = {
            **self._base(self.rng.choice(["enter", "ranging", "ranging", "exit"]), now_ms),
            "store_id": store.id,
            "beacon_id": f"b-{store.id}-{zone}",
            "zone_id": zone,
            "app_device_id": member.app_device_id,
            "rssi": self.rng.randrange(-95, -40),
            "proximity": self.rng.choice(["immediate", "near", "far"]),
        }
        return "beacons", member.app_device_id.encode(), orjson.dumps(event)

    def sale(self, member: SimMember, store: Store, now_ms: int) -> Record:
        zone = self.rng.choice(store.zones) if store.zones else None
        category = zone.category if zone else "general"
        items: list[dict[str, Any]] = [
            {
                "sku": f"sku-{self.rng.randrange(10_000)}",
                "category": category,
                "brand": self.rng.choice(CATEGORIES.get(category, ["house"])),
                "qty": self.rng.randrange(1, 3),
                "price": round(self.rng.uniform(9, 899), 2),
            }
            for _ in range(self.rng.randrange(1, 4))
        ]
        event: dict[str, Any] = {
            **self._base("sale", now_ms),
            "store_id": store.id,
            "receipt_id": f"r-{uuid.uuid4().hex[:12]}",
            "total": round(sum(i["qty"] * i["price"] for i in items), 2),
            "items": items,
        }
        roll = self.rng.random()
        if roll < 0.5:
            event["member_card"] = member.card
        elif roll < 0.8:
            event["phone"] = member.phone
        return "pos", store.id.encode(), orjson.dumps(event)

    def bad_record(self, now_ms: int) -> Record:
        choice = self.rng.randrange(5)
        base = self._base("checkin", now_ms)
        if choice == 0:
            return "checkins", None, b"{not json"
        if choice == 1:
            return (
                "checkins",
                None,
                orjson.dumps(
                    {**base, "ts": "yesterday", "store_id": "sh-jingan", "member_id": "m-1"}
                ),
            )
        if choice == 2:
            return "checkins", None, orjson.dumps({**base, "store_id": "sh-jingan"})
        if choice == 3:
            return (
                "wifi",
                None,
                orjson.dumps(
                    {
                        **self._base("probe", now_ms),
                        "store_id": "s",
                        "ap_id": "a",
                        "mac": "zz",
                        "rssi": 40,
                    }
                ),
            )
        return (
            "pos",
            None,
            orjson.dumps(
                {**self._base("sale", now_ms), "store_id": "s", "receipt_id": "r", "total": -5}
            ),
        )

    def next_record(self, now_ms: int) -> Record:
        if self.rng.random() < self.bad_ratio:
            self.counts["bad"] += 1
            return self.bad_record(now_ms)
        member = self.rng.choice(self.population)
        store = self.rng.choice(self.stores)
        maker = self.rng.choices(
            [self.checkin, self.wifi, self.beacon, self.sale], [30, 30, 28, 12]
        )[0]
        topic, key, value = maker(member, store, now_ms)
        self.counts[topic] += 1
        return topic, key, value

    async def run(self, stop: asyncio.Event | None = None, register: bool = True) -> Counter[str]:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, acks="all", enable_idempotence=True
        )
        await producer.start()
        sent = 0
        try:
            if register:
                now = int(time.time() * 1000)
                for member in self.population:
                    for topic, key, value in self.registration(member, now):
                        await producer.send(topic, value=value, key=key)
                        self.counts[topic] += 1
                        sent += 1
            start = time.monotonic()
            produced = 0
            while time.monotonic() - start < self.duration and not (stop and stop.is_set()):
                due = int((time.monotonic() - start) * self.rate) + 1
                while produced < due:
                    topic, key, value = self.next_record(int(time.time() * 1000))
                    await producer.send(topic, value=value, key=key)
                    produced += 1
                await asyncio.sleep(min(0.05, 1 / max(self.rate, 1)))
            sent += produced
            await producer.flush()
        finally:
            await producer.stop()
        self.counts["total"] = sent
        return self.counts
