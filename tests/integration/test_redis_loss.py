"""Redis loses its data mid-stream (FLUSHALL, as a failover to an empty replica does): the worker
notices, rebuilds what Kafka knows, and meanwhile sends nothing twice and overspends nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import redis as redis_sync

from infra.redis_server import RedisServer
from infra.worker_process import WorkerProcess, health, metrics
from tests.integration.conftest import API_TOKEN, collect, get_member, publish_trigger
from tests.integration.test_delivery import FAST, push_trigger, until
from tests.integration.test_ingestion import ev, uid

PREFIX = "rl-"


async def test_a_flushed_redis_is_rebuilt_from_kafka_and_nothing_is_sent_twice(
    worker_env, receiver, send, bootstrap, tmp_path_factory
):
    redis = RedisServer(tmp_path_factory.mktemp("redis-loss"))
    redis.start()
    env = {
        **worker_env,
        "REDIS_URL": redis.url,
        "STOREPULSE_TOPIC_PREFIX": PREFIX,
        "STOREPULSE_APP_ID": "storepulse-rl",
        "STOREPULSE_FREQUENCY_CAPS": "",
    }
    proc = WorkerProcess(env=env, workdir=tmp_path_factory.mktemp("rl-worker"), name="rl")
    try:
        proc.start()
        await run_story(proc, redis, receiver, send, bootstrap)
    finally:
        proc.stop()
        redis.stop()


async def deliveries_of(bootstrap: str, ids: set[str], count: int) -> list[dict[str, Any]]:
    return await collect(
        bootstrap,
        PREFIX + "deliveries",
        lambda d: d["action_id"] in ids,
        count=count,
        timeout=60,
    )


async def actions_of(bootstrap: str, tid: str, count: int) -> set[str]:
    found = await collect(
        bootstrap, PREFIX + "actions", lambda a: a["trigger_id"] == tid, count=count, timeout=60
    )
    return {a["action_id"] for a in found}


def redis_data(proc: WorkerProcess) -> dict[str, Any]:
    """`/health`'s view of the Redis data set: epoch, whether rebuilding, the last rebuild."""
    body: Any = health(proc.web_port, API_TOKEN) or {}
    return dict(body["redis_data"])


def points_of(proc: WorkerProcess, member_id: str) -> int:
    status, body = get_member(proc.web_port, member_id)
    return int(body["member"].get("points", 0)) if status == 200 else 0


async def run_story(proc: WorkerProcess, redis: RedisServer, receiver, send, bootstrap) -> None:
    push, coupon = f"rl-push-{uuid.uuid4().hex[:6]}", f"rl-coupon-{uuid.uuid4().hex[:6]}"
    await publish_trigger(proc.web_port, push_trigger(push))
    coupon_then = [
        {"type": "coupon", "pool": "test-pool-5", "value": 10, "template": "{coupon.code}"}
    ]
    await publish_trigger(proc.web_port, push_trigger(coupon, then=coupon_then))
    members = [uid("m") for _ in range(8)]
    device = {m: f"dev-{m}" for m in members}
    card = {m: f"card-{m}" for m in members}
    for m in members:  # the devices and cards are bound by the edge, in Redis (and on Kafka)
        link = ev("registration", member_id=m, app_device_id=device[m], member_card=card[m])
        profile = ev("profile", member_id=m, consent={"push": True})
        await send(PREFIX + "identity", link, key=m.encode())
        await send(PREFIX + "members", profile, key=m.encode())
    await collect(
        bootstrap,
        PREFIX + "member-events",
        lambda e: e["member_id"] in members and e["type"] in ("registration", "profile"),
        count=2 * len(members),
        timeout=60,
    )
    epoch_before = redis_data(proc)["epoch"]

    # Before the loss: a push per check-in by device, 5 coupons of a pool of 5, a sale by card.
    checkins = [ev("checkin", store_id=FAST, app_device_id=device[m], test=push) for m in members]
    for e in checkins:
        await send(PREFIX + "checkins", e, key=e["app_device_id"].encode())
    pushes = await actions_of(bootstrap, push, len(members))
    await until(lambda: all(receiver.accepted[a] == 1 for a in pushes), 30, "pushes not sent")
    for m in members:
        e = ev("checkin", store_id=FAST, app_device_id=device[m], test=coupon)
        await send(PREFIX + "checkins", e, key=m.encode())
    coupons = await actions_of(bootstrap, coupon, len(members))
    first = await deliveries_of(bootstrap, coupons, len(members))
    assert sorted(d["outcome"] for d in first) == ["sent"] * 5 + ["suppressed"] * 3
    sale = ev("sale", store_id=FAST, receipt_id=uid("r"), total=300.0, member_card=card[members[0]])
    await send(PREFIX + "pos", sale, key=b"till-1")
    await until(lambda: points_of(proc, members[0]) > 0, 30, "no points")
    points = points_of(proc, members[0])

    redis_sync.Redis.from_url(redis.url).flushall()  # what a failover to an empty replica does

    # After: the same check-ins again (their de-duplication keys are gone), new coupon
    # check-ins, the same sale again under a new event id, and a card-only sale.
    for e in checkins:
        await send(PREFIX + "checkins", e, key=e["app_device_id"].encode())
    for m in members:
        e = ev("checkin", store_id=FAST, app_device_id=device[m], test=coupon)
        await send(PREFIX + "checkins", e, key=m.encode())
    again = {**sale, "event_id": str(uuid.uuid4())}
    await send(PREFIX + "pos", again, key=b"till-1")
    later = ev("sale", store_id=FAST, receipt_id=uid("r"), total=50.0, member_card=card[members[1]])
    await send(PREFIX + "pos", later, key=b"till-1")

    replayed = await deliveries_of(bootstrap, pushes, 2 * len(members))
    assert sorted((d["outcome"], d["reason"]) for d in replayed) == sorted(
        [("sent", "ok")] * len(members) + [("suppressed", "duplicate")] * len(members)
    ), "a delivered push was sent again after the flush"
    await asyncio.sleep(1.0)
    assert {a: receiver.accepted[a] for a in pushes} == dict.fromkeys(pushes, 1)

    more = await actions_of(bootstrap, coupon, 2 * len(members))
    assert len(more) == 2 * len(members), "coupon check-ins after the flush went to anonymous ids"
    settled = await deliveries_of(bootstrap, more, 2 * len(members))
    assert sum(d["outcome"] == "sent" for d in settled) == 5, "the pool was re-seeded as unspent"
    codes = {receiver.bodies[a]["coupon"]["code"] for a in more if a in receiver.bodies}
    assert len(codes) == 5
    refused = await collect(  # what compaction keeps of an exhausted pool's codes: nobody's
        bootstrap,
        PREFIX + "coupon-codes",
        lambda c: c["action_id"] in more and c["status"] == "refused",
        timeout=10,
        settle=1.0,
    )
    assert refused and {c["member_id"] for c in refused} == {""}, refused

    resolved = await collect(
        bootstrap,
        PREFIX + "member-events",
        lambda e: e["event_id"] == later["event_id"],
        timeout=30,
    )
    assert resolved[0]["member_id"] == members[1], "a card-only sale landed on an anonymous id"
    await until(lambda: points_of(proc, members[1]) > 0, 30, "no points")
    assert points_of(proc, members[0]) == points  # the sale counted once

    seen = redis_data(proc)
    assert seen["epoch"] not in (None, epoch_before)
    assert seen["last_rebuild"]["bindings"] >= 2 * len(members)
    assert metrics(proc.web_port)["storepulse_redis_epoch_changes_total"] >= 1
    started = time.monotonic()
    await until(lambda: (health(proc.web_port) or {}).get("status") == "ok", 10, "not ok again")
    assert time.monotonic() - started < 10
