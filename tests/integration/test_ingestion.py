"""The edge through real Kafka and Redis: schemas, dead letters, de-duplication, OneID, privacy."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from contracts.batches import unpack
from infra.worker_process import metrics as scrape
from tests.conftest import now_ms
from tests.integration.conftest import changelog_of, collect, latest_state


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ev(kind: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "ts": now_ms(), "kind": kind, **fields}


def unique_mac() -> str:
    raw = uuid.uuid4().bytes[:6]
    return ":".join(f"{b:02x}" for b in bytes([raw[0] & 0xFC, *raw[1:]]))


def unique_phone() -> str:
    return "138" + str(uuid.uuid4().int)[:8]


async def register(send, bootstrap, member_id: str, **identifiers: str) -> None:
    link = ev("registration", member_id=member_id, **identifiers)
    await send("identity", link, key=member_id.encode())
    await collect(bootstrap, "member-events", lambda e: e["event_id"] == link["event_id"])


async def test_each_kind_reaches_member_events_with_the_right_member(worker, send, bootstrap):
    member, card, device, openid = uid("m"), uid("card"), uid("dev"), uid("oid")
    mac, phone = unique_mac(), unique_phone()
    await register(
        send,
        bootstrap,
        member,
        member_card=card,
        app_device_id=device,
        openid=openid,
        phone=phone,
        mac=mac,
    )
    store = "sh-jingan"
    events = {
        "checkins": ev("checkin", store_id=store, openid=openid),
        "wifi": ev("probe", store_id=store, ap_id="ap-1", mac=mac.upper(), rssi=-60),
        "beacons": ev(
            "enter",
            store_id=store,
            beacon_id="b1",
            app_device_id=device,
            rssi=-70,
            zone_id="cosmetics",
        ),
        "pos": ev(
            "sale",
            store_id=store,
            receipt_id=uid("r"),
            total=120.0,
            member_card=card,
            items=[{"sku": "s1", "category": "cosmetics", "brand": "b", "qty": 1, "price": 120.0}],
        ),
        "members": ev("profile", member_id=member, tier="gold"),
    }
    portal = ev(
        "portal_login",
        store_id=store,
        ap_id="ap-1",
        mac=mac,
        rssi=-50,
        phone=f"+86 {phone[:3]}-{phone[3:]}",
    )
    expected_types = {
        "checkins": "checkin",
        "wifi": "wifi",
        "beacons": "beacon",
        "pos": "purchase",
        "members": "profile",
    }
    for topic, event in events.items():
        await send(topic, event, key=member.encode())  # `members` is compacted: keys required
    await send("wifi", portal)
    ids = {e["event_id"] for e in events.values()} | {portal["event_id"]}
    got = await collect(
        bootstrap, "member-events", lambda e: e["event_id"] in ids, count=len(ids), timeout=15
    )
    assert {e["event_id"]: e["member_id"] for e in got} == dict.fromkeys(ids, member)
    by_id = {e["event_id"]: e for e in got}
    for topic, event in events.items():
        assert by_id[event["event_id"]]["type"] == expected_types[topic]
    assert by_id[events["pos"]["event_id"]]["attrs"]["total"] == 120.0


@pytest.mark.parametrize(
    ("topic", "record", "reason", "field"),
    [
        (
            "wifi",
            ev("probe", store_id="s", ap_id="a", mac="aa:bb:cc:dd:ee:ff", rssi=40),
            "schema",
            "rssi",
        ),
        (
            "wifi",
            ev("portal_login", store_id="s", ap_id="a", mac="aa:bb:cc:dd:ee:ff", rssi=-40),
            "schema",
            "phone",
        ),
        (
            "wifi",
            ev("teleport", store_id="s", ap_id="a", mac="aa:bb:cc:dd:ee:ff", rssi=-40),
            "unknown_kind",
            "kind",
        ),
        ("pos", ev("sale", store_id="s", receipt_id="r", total=-5), "schema", "total"),
        (
            "pos",
            ev("refund", store_id="s", receipt_id="r", total=5),
            "schema",
            "original_receipt_id",
        ),
        (
            "pos",
            ev(
                "sale",
                store_id="s",
                receipt_id="r",
                total=5,
                items=[{"sku": "x", "qty": 0, "price": 1}],
            ),
            "schema",
            "items.0.qty",
        ),
        ("beacons", ev("enter", store_id="s", beacon_id="b", rssi=-50), "schema", "app_device_id"),
        ("identity", ev("app_login", app_device_id="d"), "schema", "member_id"),
        ("members", ev("profile", member_id="m", birthday="tomorrow"), "schema", "birthday"),
        ("checkins", ev("checkin", store_id="s", member_id="m", ts=1), "ts_too_old", "ts"),
    ],
)
async def test_bad_input_lands_in_dead_letter_with_reason_naming_the_field(
    worker, send, bootstrap, topic, record, reason, field
):
    record = {**record, "event_id": str(uuid.uuid4())}
    raw = orjson.dumps(record)
    await send(topic, raw, key=b"k")
    letters = await collect(
        bootstrap,
        "dead-letter",
        lambda d: record["event_id"].encode() in base64.b64decode(d["value_b64"]),
        timeout=30,  # a loaded CI machine once took more than 10 s (as for the batch test)
    )
    assert letters, f"no dead letter for the {topic} record within 30 s"
    assert (letters[0]["source_topic"], letters[0]["reason"]) == (topic, reason)
    assert field in letters[0]["message"]


async def test_duplicate_is_dropped_and_counted_even_after_a_worker_restart(
    worker, send, bootstrap, checkin_factory
):
    event = checkin_factory()
    await send("checkins", event)
    await send("checkins", event)  # a producer retry: same event_id, another offset
    await collect(bootstrap, "member-events", lambda e: e["event_id"] == event["event_id"])
    worker.stop()
    worker.start()
    await send("checkins", event)  # the sensor retries once more, after the restart
    deadline = time.monotonic() + 15
    while scrape(worker.web_port).get("storepulse_duplicates_dropped_total", 0) < 1:
        assert time.monotonic() < deadline, "the duplicate after the restart was not counted"
        await asyncio.sleep(0.3)
    # member-events is at least once: a stop before the edge committed its offsets re-forwards
    # the first copy from its own position (seen when this test runs first, on a new worker),
    # and the member agent knows it. What the member gets is one visit.
    forwarded = await collect(
        bootstrap,
        "member-events",
        lambda e: e["event_id"] == event["event_id"],
        timeout=4,
        settle=2,
    )
    assert 1 <= len(forwarded) <= 2
    await asyncio.sleep(1.0)
    state = await latest_state(bootstrap, event["member_id"], lambda s: True, timeout=3)
    assert state is not None and state["visits"] == 1, state


async def test_anonymous_visits_survive_identification(worker, send, bootstrap):
    device, member = uid("dev"), uid("m")
    key = device.encode()
    anonymous = [
        ev("checkin", store_id="sh-jingan", app_device_id=device),
        ev("checkin", store_id="sh-pudong", app_device_id=device),
    ]
    for checkin in anonymous:
        await send("checkins", checkin, key=key)
    # Topics are not ordered with each other: the visits must be recorded as anonymous before
    # the login (sent together, the login could bind the device first; both are correct).
    ids = {e["event_id"] for e in anonymous}
    forwarded = await collect(bootstrap, "member-events", lambda e: e["event_id"] in ids, count=2)
    assert {e["member_id"] for e in forwarded} == {forwarded[0]["member_id"]}
    assert forwarded[0]["member_id"].startswith("anon-")
    await send("identity", ev("app_login", member_id=member, app_device_id=device), key=key)
    await asyncio.sleep(1.0)
    await send(
        "checkins", ev("checkin", store_id="bj-sanlitun", member_id=member), key=member.encode()
    )
    state = await latest_state(bootstrap, member, lambda s: s["visits"] == 3)
    assert state is not None and state["visits"] == 3, state
    assert state["visits_by_store"] == {"sh-jingan": 1, "sh-pudong": 1, "bj-sanlitun": 1}
    assert len(state["merged_from"]) == 1 and state["merged_from"][0].startswith("anon-")
    # The device now names the member directly.
    later = ev("checkin", store_id="sh-jingan", app_device_id=device)
    await send("checkins", later, key=key)
    got = await collect(bootstrap, "member-events", lambda e: e["event_id"] == later["event_id"])
    assert got[0]["member_id"] == member


async def test_conflicting_link_is_reported_and_first_binding_wins(worker, send, bootstrap):
    card, first, second = uid("card"), uid("m"), uid("m")
    await register(send, bootstrap, first, member_card=card)
    stolen = ev("card_binding", member_id=second, member_card=card)
    await send("identity", stolen)
    audit = await collect(
        bootstrap, "identity-audit", lambda a: a["event_id"] == stolen["event_id"]
    )
    assert (audit[0]["bound_member_id"], audit[0]["requested_member_id"]) == (first, second)
    assert audit[0]["rule"] == "first_binding_wins"
    sale = ev("sale", store_id="sh-jingan", receipt_id=uid("r"), total=10.0, member_card=card)
    await send("pos", sale)
    got = await collect(bootstrap, "member-events", lambda e: e["event_id"] == sale["event_id"])
    assert got[0]["member_id"] == first


async def test_randomized_mac_is_never_linked(worker, send, bootstrap):
    member, phone = uid("m"), unique_phone()
    await register(send, bootstrap, member, phone=phone)
    random_mac = "3a:11:22:33:44:55"  # 0x3a has the locally-administered bit
    login = ev(
        "portal_login", store_id="sh-jingan", ap_id="a", mac=random_mac, rssi=-50, phone=phone
    )
    probe = ev("probe", store_id="sh-jingan", ap_id="a", mac=random_mac, rssi=-50)
    await send("wifi", login, key=b"k")
    await asyncio.sleep(0.5)
    await send("wifi", probe, key=b"k")
    got = await collect(
        bootstrap,
        "member-events",
        lambda e: e["event_id"] in (login["event_id"], probe["event_id"]),
        count=2,
    )
    owners = {e["event_id"]: e["member_id"] for e in got}
    assert owners[login["event_id"]] == member  # the phone names the member
    assert owners[probe["event_id"]].startswith("anon-")  # the random MAC stays anonymous


async def test_accounting_holds_on_a_mixed_corpus(worker, send, bootstrap, checkin_factory):
    before = scrape(worker.web_port)
    good = [checkin_factory() for _ in range(30)] + [
        ev("probe", store_id="sh-jingan", ap_id="a", mac=unique_mac(), rssi=-70) for _ in range(20)
    ]
    bad = [b"", b"{", orjson.dumps(ev("probe", store_id="s")), b"[]"] * 3
    dups = good[:8]
    for event in good:
        await send("wifi" if event["kind"] == "probe" else "checkins", event)
    for raw in bad:
        await send("checkins", raw)
    for event in dups:
        await send("wifi" if event["kind"] == "probe" else "checkins", event)
    consumed = len(good) + len(bad) + len(dups)

    def delta(name: str) -> float:
        return scrape(worker.web_port).get(name, 0) - before.get(name, 0)

    deadline = time.monotonic() + 20
    while delta("storepulse_events_in_total") < consumed and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.5)
    forwarded = delta("storepulse_events_forwarded_total")
    dead = delta("storepulse_dead_letters_total")
    duplicates = delta("storepulse_duplicates_dropped_total")
    assert delta("storepulse_events_in_total") == consumed
    assert (forwarded, dead, duplicates) == (len(good), len(bad), len(dups))
    assert forwarded + dead + duplicates == consumed


async def test_raw_macs_and_phones_appear_nowhere_after_ingest(worker, send, bootstrap, infra):
    member, mac, phone = uid("m"), unique_mac(), unique_phone()
    bare_mac = mac.replace(":", "")
    needles = [
        mac.encode(),
        mac.upper().encode(),
        bare_mac.encode(),
        bare_mac.upper().encode(),
        phone.encode(),
    ]
    good = [
        ev("registration", member_id=member, phone=phone, mac=mac),
        ev("portal_login", store_id="sh-jingan", ap_id="a", mac=mac, rssi=-50, phone=phone),
        ev("sale", store_id="sh-jingan", receipt_id=uid("r"), total=5.0, phone=phone),
    ]
    await send("identity", good[0], key=phone.encode())
    await send("wifi", good[1], key=mac.encode())
    await send("pos", good[2], key=phone.encode())
    bad_json = ev("portal_login", store_id="s", ap_id="a", mac=mac, rssi=99, phone=phone)
    await send("wifi", bad_json, key=mac.encode())
    await send("wifi", f"garbage {mac} {phone}".encode(), key=mac.encode())
    ids = {e["event_id"] for e in good}
    await collect(bootstrap, "member-events", lambda e: e["event_id"] in ids, count=3)
    await collect(
        bootstrap,
        "dead-letter",
        lambda d: d["source_topic"] == "wifi" and d["redacted"],
        count=2,
        timeout=10,
    )
    await asyncio.sleep(1.5)  # let table changelogs and logs flush

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    topics = [
        t
        for t in await admin.list_topics()
        if t not in ("checkins", "wifi", "beacons", "pos", "identity", "members")
    ]
    await admin.close()
    assert "dead-letter" in topics and "member-events" in topics
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    scanned = 0
    try:
        quiet = 0
        while quiet < 3:
            batches = await consumer.getmany(timeout_ms=300)
            quiet = 0 if batches else quiet + 1
            for records in batches.values():
                for rec in records:
                    blob = (rec.key or b"") + (rec.value or b"")
                    scanned += 1
                    for needle in needles:
                        assert needle not in blob, f"raw identifier in topic {rec.topic}"
    finally:
        await consumer.stop()
    assert scanned > 10

    redis = aioredis.Redis.from_url(infra.redis_url)
    async for k in redis.scan_iter(count=1000):
        value = await redis.get(k) if await redis.type(k) == b"string" else b""
        for needle in needles:
            assert needle not in k and needle not in (value or b""), f"raw identifier in {k!r}"
    await redis.aclose()

    log = worker.log.read_bytes()
    data = b"".join(
        p.read_bytes() for p in (worker.workdir / "worker-data").rglob("*") if p.is_file()
    )
    for needle in needles:
        assert needle not in log and needle not in data


async def test_a_batch_record_forwards_each_good_event_and_dead_letters_each_bad_one_at_its_index(
    worker, send, bootstrap
):
    members = [uid("m") for _ in range(3)]
    good = [ev("checkin", store_id="sh-jingan", member_id=m) for m in members]
    bad = ev("checkin", store_id="sh-jingan")  # no identifier
    batch = {"events": [good[0], bad, good[1], good[2]]}
    await send("checkins", batch, key=b"gateway-7")
    ids = {e["event_id"] for e in good}
    forwarded = await collect(bootstrap, "member-events", lambda e: e["event_id"] in ids, count=3)
    assert {(e["event_id"], e["member_id"]) for e in forwarded} == {
        (e["event_id"], e["member_id"]) for e in good
    }
    (dead,) = await collect(
        bootstrap,
        "dead-letter",
        lambda d: (
            d.get("index") == 1 and bad["event_id"].encode() in base64.b64decode(d["value_b64"])
        ),
        settle=1.0,
        timeout=30,  # a loaded CI machine (after the chaos run) once took longer than 10 s
    )
    assert dead["reason"] == "no_identifier"
    assert orjson.loads(base64.b64decode(dead["value_b64"]))["event_id"] == bad["event_id"]
    before = scrape(worker.web_port).get("storepulse_duplicates_dropped_total", 0)
    await send("checkins", batch, key=b"gateway-7")  # the gateway posts the same batch again
    deadline = time.monotonic() + 10
    while scrape(worker.web_port).get("storepulse_duplicates_dropped_total", 0) < before + 3:
        assert time.monotonic() < deadline, "the re-posted batch's events were not duplicates"
        await asyncio.sleep(0.2)
    again = await collect(
        bootstrap, "member-events", lambda e: e["event_id"] in ids, count=6, timeout=3
    )
    assert len(again) == 3  # nothing forwarded twice


async def test_a_batch_reaches_members_as_one_record_per_partition_and_one_write_per_member(
    worker, send, bootstrap
):
    """Batches on every hop: the edge forwards a batch's events in one member-events record per
    destination partition, and the member agent writes each member once per batch, with every
    one of its events applied (25 sales of one member, in one envelope)."""
    buyer, others = uid("m"), [uid("m") for _ in range(7)]
    sales = [
        ev("sale", store_id="sh-jingan", member_id=buyer, receipt_id=uid("r"), total=10.0 + i)
        for i in range(25)
    ]
    checkins = [ev("checkin", store_id="sh-jingan", member_id=m) for m in others]
    await send("pos", {"events": sales}, key=b"till-3")
    await send("checkins", {"events": checkins}, key=b"gate-1")
    ids = {e["event_id"] for e in sales + checkins}
    consumer = AIOKafkaConsumer(
        "member-events", bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    carrying: dict[tuple[int, int], set[str]] = {}  # (partition, offset) -> our events in it
    try:
        deadline = time.monotonic() + 15
        while sum(map(len, carrying.values())) < len(ids) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                for rec in records:
                    try:
                        items = unpack(rec.value)
                    except orjson.JSONDecodeError:
                        continue
                    ours = {e["event_id"] for e in items if e.get("event_id") in ids}
                    if ours:
                        carrying[(tp.partition, rec.offset)] = ours
    finally:
        await consumer.stop()
    assert set().union(*carrying.values()) == ids  # every event forwarded ...
    sales_ids = {e["event_id"] for e in sales}
    assert sum(1 for c in carrying.values() if c & sales_ids) == 1  # ... the sales in one record
    assert len(carrying) <= 1 + 4  # and the check-ins in at most one per partition (4)
    state = await latest_state(bootstrap, buyer, lambda s: bought(s) >= 25)
    assert state is not None
    spend = sum(e["total"] for e in sales)
    days = state["purchases"]["days"].values()
    assert sum(d[0] for d in days) == 25 and abs(sum(d[1] for d in days) - spend) < 0.01
    writes = len(await changelog_of(bootstrap, buyer, seconds=3.0))
    assert writes <= 2, writes  # once for the batch (a second window may split it), not 25 times


def bought(state: dict[str, Any]) -> int:
    return sum(d[0] for d in ((state.get("purchases") or {}).get("days") or {}).values())
