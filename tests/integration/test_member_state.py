"""Member state through real Kafka: a scripted day, timers without new events, restarts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from contracts.batches import unpack
from infra.worker_process import WorkerProcess
from tests.integration.conftest import collect, get_member
from tests.integration.test_ingestion import ev, uid, unique_mac

MIN = 60_000
DAY = "day-"  # topic prefix of the worker that replays a past day


@pytest.fixture(scope="module")
def day_worker(worker_env, tmp_path_factory) -> Iterator[WorkerProcess]:
    """A worker of its own for a day in the past: its event-time clock sees only that day."""
    proc = WorkerProcess(
        env={
            **worker_env,
            "STOREPULSE_TOPIC_PREFIX": DAY,
            "STOREPULSE_APP_ID": "storepulse-day",
        },
        workdir=tmp_path_factory.mktemp("day-worker"),
        name="day-worker",
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class ForwardWatch:
    """Follows member-events from now on, so the script can wait for each forward quickly."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = AIOKafkaConsumer(
            DAY + "member-events",
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="latest",
        )
        self.seen: set[str] = set()

    async def __aenter__(self) -> ForwardWatch:
        await self.consumer.start()
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def send(self, send, topic: str, event: dict[str, Any], key: str) -> None:
        """Sensors report minutes apart; wait until each event is forwarded before the next
        (events of one member arrive through several topics, which Kafka does not order)."""
        await send(DAY + topic, event, key=key.encode())
        deadline = time.monotonic() + 10
        while event["event_id"] not in self.seen:
            assert time.monotonic() < deadline, f"{event['event_id']} was not forwarded"
            for records in (await self.consumer.getmany(timeout_ms=100)).values():
                self.seen.update(e["event_id"] for r in records for e in unpack(r.value))


def derived_of(member: str):
    return lambda e: e["member_id"] == member


async def test_a_scripted_day_gives_exactly_the_expected_state_and_derived_events(
    day_worker, send, bootstrap
):
    h = int(time.time() * 1000) - 6 * 3_600_000
    a, a_dev, a_card = uid("m"), uid("dev"), uid("card")
    b, b_phone = uid("m"), "137" + str(uuid.uuid4().int)[:8]
    b_mac = unique_mac()
    setup = [
        (
            "identity",
            ev("registration", ts=h - MIN, member_id=a, app_device_id=a_dev, member_card=a_card),
            a,
        ),
        ("identity", ev("registration", ts=h - MIN, member_id=b, phone=b_phone, mac=b_mac), b),
        ("members", ev("profile", member_id=b, tier="gold", ts=h - MIN), b),
    ]
    store = "sh-jingan"
    beacon = dict(store_id=store, app_device_id=a_dev)
    script_a = [
        ("beacons", ev("enter", ts=h, beacon_id="b-sh-jingan-cosmetics", rssi=-60, **beacon)),
        *[
            (
                "beacons",
                ev(
                    "ranging", ts=h + m * MIN, beacon_id="b-sh-jingan-cosmetics", rssi=-65, **beacon
                ),
            )
            for m in (4, 8, 12)
        ],
        (
            "beacons",
            ev(
                "enter",
                ts=h + 15 * MIN,
                beacon_id="b-sh-jingan-food-court",
                rssi=-55,
                proximity="near",
                **beacon,
            ),
        ),
        (
            "pos",
            ev(
                "sale",
                ts=h + 20 * MIN,
                store_id=store,
                receipt_id="ra1",
                total=2500.0,
                member_card=a_card,
                items=[
                    {
                        "sku": "x",
                        "category": "cosmetics",
                        "brand": "lancome",
                        "qty": 2,
                        "price": 1250.0,
                    }
                ],
            ),
        ),
        ("checkins", ev("checkin", ts=h + 180 * MIN, store_id=store, member_id=a)),
        (
            "pos",
            ev(
                "refund",
                ts=h + 185 * MIN,
                store_id=store,
                receipt_id="ra2",
                original_receipt_id="ra1",
                total=1000.0,
                member_card=a_card,
            ),
        ),
    ]
    script_b = [
        (
            "wifi",
            ev(
                "association",
                ts=h + 60 * MIN,
                store_id=store,
                ap_id="ap-fashion",
                mac=b_mac,
                rssi=-70,
                zone_id="fashion",
            ),
        ),
        (
            "pos",
            ev(
                "sale",
                ts=h + 70 * MIN,
                store_id=store,
                receipt_id="rb1",
                total=1000.0,
                phone=b_phone,
            ),
        ),
    ]
    async with ForwardWatch(bootstrap) as watch:
        for topic, event, key in setup:
            await watch.send(send, topic, event, key)
        # In time order, as sensors report: with both members on one partition, sending all of
        # A's day first would make B's events late by hours, and B's visit could end by A's clock
        # before B's sale arrived.
        script = [(t, e, a) for t, e in script_a] + [(t, e, b) for t, e in script_b]
        for topic, event, key in sorted(script, key=lambda s: s[1]["ts"]):
            await watch.send(send, topic, event, key)

    # Independent expectations, worked out by hand from the script and config/stores.yaml
    # (sh-jingan: visit timeout 30 min, zone timeout 5 min, dwell 5/10/20 min) and
    # config/loyalty.yaml (pink from 0, white from 2000; 1 point per CNY, gold 1.5x).
    # A: in cosmetics 0..15 (seen at 0, 4, 8, 12), in food from 15, last zone signal at 15 so the
    # zone ends at 20 (the sale at 20 is a store-level sighting); visit ends 30 min after 20.
    expected_a = [
        ("visit_started", h),
        ("zone_entered", h),
        ("zone_dwell", h + 5 * MIN),
        ("zone_dwell", h + 10 * MIN),
        ("zone_left", h + 15 * MIN),
        ("zone_entered", h + 15 * MIN),
        ("zone_dwell", h + 20 * MIN),
        ("zone_left", h + 20 * MIN),
        ("tier_changed", h + 20 * MIN),
        ("visit_ended", h + 50 * MIN),
        ("visit_started", h + 180 * MIN),
        ("tier_changed", h + 185 * MIN),
        ("visit_ended", h + 215 * MIN),
    ]
    # B: in fashion from 60, no zone signal after 60 so the zone ends at 65; sale at 70.
    expected_b = [
        ("visit_started", h + 60 * MIN),
        ("zone_entered", h + 60 * MIN),
        ("zone_dwell", h + 65 * MIN),
        ("zone_left", h + 65 * MIN),
        ("visit_ended", h + 100 * MIN),
    ]
    got_a = await collect(
        bootstrap,
        DAY + "derived-events",
        derived_of(a),
        count=len(expected_a),
        timeout=15,
        settle=1.5,
    )
    got_b = await collect(
        bootstrap,
        DAY + "derived-events",
        derived_of(b),
        count=len(expected_b),
        timeout=15,
        settle=1.5,
    )
    assert [(e["type"], e["ts"]) for e in got_a] == expected_a
    assert [(e["type"], e["ts"]) for e in got_b] == expected_b
    tiers = [
        (e["attrs"]["from_tier"], e["attrs"]["to_tier"])
        for e in got_a
        if e["type"] == "tier_changed"
    ]
    assert tiers == [("pink", "white"), ("white", "pink")]
    visit_ended = [e["attrs"] for e in got_a if e["type"] == "visit_ended"]
    assert visit_ended[0]["duration_ms"] == 20 * MIN
    assert visit_ended[0]["zone_ms"] == {"cosmetics": 15 * MIN, "food-court": 5 * MIN}
    assert got_a[10]["attrs"]["days_since_prev_visit"] == 0.125  # 3 h

    status, body = get_member(day_worker.web_port, a)
    assert status == 200
    state = body["member"]
    assert (state["visits"], state["visits_by_store"], state["presence"]) == (2, {store: 2}, None)
    assert (state["points"], state["tier"], state["growth"]) == (1500, "pink", 1500.0)
    assert state["purchases"]["categories"] == ["cosmetics"]
    assert state["purchases"]["days"] == {
        time.strftime("%Y-%m-%d", time.gmtime((h + 20 * MIN + 8 * 3_600_000) / 1000)): [1, 1500.0]
    }
    status, body = get_member(day_worker.web_port, b)
    state = body["member"]
    assert (state["visits"], state["points"], state["tier"]) == (1, 1500, "gold")  # 1.5x gold


async def test_member_lookup_needs_the_token_and_says_when_unknown(worker):
    status, body = get_member(worker.web_port, "m-nobody", token="wrong")
    assert status == 401 and "API key" in body["error"]
    status, body = get_member(worker.web_port, "m-nobody")
    assert status == 404


async def store_entry(send, bootstrap, store: str, beacon: str) -> tuple[str, dict[str, Any]]:
    member = uid("m")
    entry = ev(
        "enter",
        store_id=store,
        beacon_id=beacon,
        app_device_id=uid("dev"),
        member_id=member,
        rssi=-50,
    )
    await send("beacons", entry, key=member.encode())
    await collect(
        bootstrap,
        "derived-events",
        lambda e: e["member_id"] == member and e["type"] == "zone_entered",
    )
    return member, entry


async def test_dwell_and_visit_end_fire_with_no_further_sensor_event(worker, send, bootstrap):
    member, entry = await store_entry(send, bootstrap, "test-fast", "b-fast-cos")
    got = await collect(
        bootstrap,
        "derived-events",
        lambda e: e["member_id"] == member and e["type"] == "visit_ended",
        timeout=15,
    )
    assert got, "visit_ended never came"
    events = await collect(bootstrap, "derived-events", derived_of(member), count=6, timeout=5)
    assert [(e["type"], e["ts"] - entry["ts"]) for e in events] == [
        ("visit_started", 0),
        ("zone_entered", 0),
        ("zone_dwell", 2000),
        ("zone_dwell", 4000),
        ("zone_left", 6000),
        ("visit_ended", 6000),
    ]


async def test_state_and_pending_timers_survive_a_killed_worker(worker, send, bootstrap):
    member, entry = await store_entry(send, bootstrap, "test-restart", "b-restart-cos")
    status, before = get_member(worker.web_port, member)
    assert status == 200 and before["next_due"] == entry["ts"] + 18_000
    worker.kill()  # SIGKILL: no clean shutdown, no final commit
    worker.start()
    assert time.time() * 1000 < entry["ts"] + 18_000, "restart too slow for this test's timers"
    status, after = get_member(worker.web_port, member)
    assert (status, after) == (200, before)
    got = await collect(
        bootstrap,
        "derived-events",
        lambda e: e["member_id"] == member and e["type"] == "visit_ended",
        timeout=30,
    )
    assert got, "the pending visit end was lost with the worker"
    events = await collect(bootstrap, "derived-events", derived_of(member), count=5, timeout=5)
    assert [
        (e["type"], e["ts"] - entry["ts"]) for e in {e["event_id"]: e for e in events}.values()
    ] == [
        ("visit_started", 0),
        ("zone_entered", 0),
        ("zone_dwell", 18_000),
        ("zone_left", 24_000),
        ("visit_ended", 24_000),
    ]
