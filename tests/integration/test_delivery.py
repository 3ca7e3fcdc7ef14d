"""Delivery through real Kafka, Redis and a local HTTP receiver: exactly once through crashes,
receiver outages and Redis restarts; coupon budgets that hold across two workers."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from infra.redis_server import RedisServer
from infra.worker_process import WorkerProcess, health
from tests.integration.conftest import API_TOKEN, collect, give_consent, publish_trigger
from tests.integration.test_ingestion import ev, uid

FAST = "test-fast"


def push_trigger(tid: str, **over: Any) -> dict[str, Any]:
    """Fires only on check-ins of its own test: other tests' pushes would otherwise count
    against these members' frequency caps (push: 3 a day)."""
    return {
        "id": tid,
        "name": tid,
        "stores": [FAST],
        "when": {"event": "checkin"},
        "if": f"event.test == '{tid}'",
        "then": [{"type": "message", "channel": "push", "template": "hello {member.member_id}"}],
        "guardrails": {"quiet_hours": None, "max_event_age": "10m"},
        **over,
    }


async def consenting(send, bootstrap, n: int) -> list[str]:
    members = [uid("m") for _ in range(n)]
    await asyncio.gather(*(give_consent(send, bootstrap, m) for m in members))
    return members


async def checkin(send, member: str, test: str, prefix: str = "") -> None:
    event = ev("checkin", store_id=FAST, member_id=member, test=test)
    await send(prefix + "checkins", event, key=member.encode())


async def fired_ids(
    bootstrap, tid: str, count: int, timeout: float = 40, prefix: str = ""
) -> set[str]:
    """Distinct action ids of a trigger (a replay after a crash emits some of them twice)."""
    deadline = time.monotonic() + timeout
    ids: set[str] = set()
    while len(ids) < count and time.monotonic() < deadline:
        actions = await collect(
            bootstrap,
            prefix + "actions",
            lambda a: a["trigger_id"] == tid,
            count=count * 3,
            timeout=min(5, deadline - time.monotonic()),
        )
        ids = {a["action_id"] for a in actions}
    return ids


async def until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_webhook_delivery_is_signed_and_carries_the_action(worker, receiver, send, bootstrap):
    tid = f"hook-{uuid.uuid4().hex[:6]}"
    await publish_trigger(worker.web_port, push_trigger(tid))
    (member,) = await consenting(send, bootstrap, 1)
    await checkin(send, member, tid)
    (action_id,) = await fired_ids(bootstrap, tid, 1)
    await until(lambda: receiver.accepted[action_id] == 1, 10, "never delivered")
    body = receiver.bodies[action_id]
    assert (body["member_id"], body["text"], body["channel"]) == (member, f"hello {member}", "push")
    assert receiver.bad_signatures == 0


async def test_a_receiver_failing_for_a_while_gets_every_action_once_in_the_end(
    worker, receiver, send, bootstrap
):
    tid = f"outage-{uuid.uuid4().hex[:6]}"
    await publish_trigger(worker.web_port, push_trigger(tid))
    members = await consenting(send, bootstrap, 8)
    refused_before = receiver.refused
    receiver.fail_for(4.0)
    for m in members:
        await checkin(send, m, tid)
    ids = await fired_ids(bootstrap, tid, len(members))
    await until(lambda: all(receiver.accepted[i] >= 1 for i in ids), 40, "not all delivered")
    await asyncio.sleep(1.0)
    assert receiver.refused > refused_before  # the outage was real
    assert {i: receiver.accepted[i] for i in ids} == dict.fromkeys(ids, 1)
    deliveries = await collect(
        bootstrap, "deliveries", lambda d: d["action_id"] in ids, count=len(ids)
    )
    assert {d["outcome"] for d in deliveries} == {"sent"}


async def test_every_action_arrives_exactly_once_across_a_sigkill(
    worker, receiver, send, bootstrap
):
    tid = f"crash-{uuid.uuid4().hex[:6]}"
    await publish_trigger(worker.web_port, push_trigger(tid))
    members = await consenting(send, bootstrap, 40)
    for i, m in enumerate(members):
        await checkin(send, m, tid)
        if i == 20:
            await asyncio.sleep(0.3)
            worker.kill()  # mid-stream: some actions claimed, some sent, some not yet fired
    worker.start()
    ids = await fired_ids(bootstrap, tid, len(members), timeout=60)
    await until(lambda: all(receiver.accepted[i] >= 1 for i in ids), 60, "actions were lost")
    await asyncio.sleep(1.0)
    duplicated = {i: n for i in ids if (n := receiver.accepted[i]) != 1}
    assert len(ids) == len(members) and duplicated == {}


async def test_a_pool_of_5_issues_exactly_5_under_two_workers(
    worker, second_worker, receiver, send, bootstrap
):
    await until(lambda: worker.ready() and second_worker.ready(), 40, "workers never settled")
    tid = f"pool-{uuid.uuid4().hex[:6]}"
    doc = push_trigger(
        tid,
        then=[
            {"type": "coupon", "pool": "test-pool-5", "value": 10, "template": "code {coupon.code}"}
        ],
    )
    await publish_trigger(worker.web_port, doc, worker.web_port, second_worker.web_port)
    members = await consenting(send, bootstrap, 15)
    for m in members:
        await checkin(send, m, tid)
    ids = await fired_ids(bootstrap, tid, len(members))
    deliveries = await collect(
        bootstrap, "deliveries", lambda d: d["action_id"] in ids, count=len(ids), timeout=60
    )
    outcomes = sorted((d["outcome"], d["reason"]) for d in deliveries)
    assert outcomes == [("sent", "ok")] * 5 + [("suppressed", "budget")] * 10
    codes = {receiver.bodies[i]["coupon"]["code"] for i in ids if i in receiver.bodies}
    assert len(codes) == 5 and all(c.startswith("TST-") for c in codes)


async def test_redis_stopped_and_restarted_mid_stream_loses_and_repeats_nothing(
    worker_env, receiver, send, bootstrap, tmp_path_factory
):
    """A worker of its own on a Redis of its own (persistent, as in production)."""
    redis = RedisServer(tmp_path_factory.mktemp("redis-restart"), persistent=True)
    redis.start()
    prefix = "rr-"
    env = {
        **worker_env,
        "REDIS_URL": redis.url,
        "STOREPULSE_TOPIC_PREFIX": prefix,
        "STOREPULSE_APP_ID": "storepulse-rr",
    }
    proc = WorkerProcess(env=env, workdir=tmp_path_factory.mktemp("rr-worker"), name="rr")
    try:
        proc.start()
        tid = f"redis-{uuid.uuid4().hex[:6]}"
        await publish_trigger(proc.web_port, push_trigger(tid))
        members = [uid("m") for _ in range(20)]
        for m in members:
            profile = {
                "event_id": f"crm-{m}",
                "ts": int(time.time() * 1000),
                "kind": "profile",
                "member_id": m,
                "consent": {"push": True},
            }
            await send(prefix + "members", profile, key=m.encode())
        # Consent first: profiles and check-ins travel on different topics, which Kafka does
        # not order between them; a check-in before its consent would rightly send nothing.
        await collect(
            bootstrap,
            prefix + "member-events",
            lambda e: e["event_id"].startswith("crm-") and e["member_id"] in members,
            count=len(members),
            timeout=30,
        )
        for i, m in enumerate(members):
            await checkin(send, m, tid, prefix)
            if i == 8:
                redis.stop()
                await until(
                    lambda: (health(proc.web_port) or {}).get("status") == "degraded",
                    15,
                    "the worker never said it was degraded",
                )
                await asyncio.sleep(2.0)
                redis.start()
        ids = await fired_ids(bootstrap, tid, len(members), prefix=prefix, timeout=60)
        await until(
            lambda: all(receiver.accepted[i] >= 1 for i in ids),
            60,
            "actions were lost while Redis was away",
        )
        await asyncio.sleep(1.0)
        assert len(ids) == len(members)
        assert {i: receiver.accepted[i] for i in ids} == dict.fromkeys(ids, 1)
        assert (health(proc.web_port, API_TOKEN) or {}).get("redis") == "up"
    finally:
        proc.stop()
        redis.stop()


async def test_a_claim_held_by_a_live_delivery_is_never_taken_over(infra):
    """A delivery queued behind a rate limit for longer than the claim timeout keeps its claim
    (another copy of the action waits, then sees it done); a renewal never undoes the outcome."""
    import redis.asyncio as aioredis

    from core.settings import Settings
    from state import idempotency
    from state.redis_store import key

    settings = Settings.from_env({"REDIS_URL": infra.redis_url})
    redis = aioredis.Redis.from_url(infra.redis_url)
    action_id = f"hold-{uuid.uuid4().hex}"
    timeout_ms = 300
    try:
        assert await idempotency.claim(redis, settings, action_id, timeout_ms) == "new"
        holding = asyncio.create_task(idempotency.hold(redis, settings, action_id, timeout_ms))
        second = asyncio.create_task(idempotency.claim(redis, settings, action_id, timeout_ms))
        await asyncio.sleep(1.5)  # five claim timeouts while "waiting for the gateway"
        assert not second.done()  # the copy waits for the live claim instead of sending too
        holding.cancel()
        await idempotency.finish(redis, settings, action_id, "sent")
        assert await asyncio.wait_for(second, 5) == "done"
        await idempotency.renew(redis, settings, action_id)  # a late renewal changes nothing
        assert await redis.get(key(settings, "act", action_id)) == b"sent"
    finally:
        await redis.aclose()
