"""Triggers through real Kafka: time patterns firing on time (and not), live definitions on two
workers, and explanations that match what the worker does."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.integration.conftest import collect, http, publish_trigger
from tests.integration.test_ingestion import ev, uid

FAST = "test-fast"  # tests/integration/stores.yaml: visit ends after 6 s, dwell 2 s and 4 s


def trigger(tid: str, when: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "id": tid,
        "name": tid,
        "stores": [FAST],
        "when": when,
        "then": [{"type": "message", "channel": "log", "template": f"{tid} {{member.member_id}}"}],
        "guardrails": {"quiet_hours": None},
        **over,
    }


async def actions_of(bootstrap, member: str, trigger_id: str, **kw) -> list[dict[str, Any]]:
    return await collect(
        bootstrap,
        "actions",
        lambda a: a["member_id"] == member and a["trigger_id"] == trigger_id,
        **kw,
    )


async def enter(send, member: str, ts: int | None = None, **extra: Any) -> dict[str, Any]:
    """A beacon places the member in cosmetics (see `entered` to wait until it has counted)."""
    e = ev(
        "enter",
        store_id=FAST,
        beacon_id="b-fast-cos",
        app_device_id=uid("dev"),
        member_id=member,
        rssi=-50,
        **({"ts": ts} if ts else {}),
        **extra,
    )
    await send("beacons", e, key=member.encode())
    return e


async def entered(bootstrap, member: str) -> None:
    """Sensors and tills send on different topics, which Kafka does not order between them:
    in a store minutes pass between walking in and paying; here we wait for the entry."""
    await collect(
        bootstrap,
        "derived-events",
        lambda e: e["member_id"] == member and e["type"] == "zone_entered",
    )


async def buy(send, member: str) -> dict[str, Any]:
    e = ev("sale", store_id=FAST, receipt_id=uid("r"), total=10.0, member_id=member)
    await send("pos", e, key=member.encode())
    return e


async def test_dwell_fires_at_its_own_threshold_with_no_new_event(worker, send, bootstrap):
    tid = f"dwell-{uuid.uuid4().hex[:6]}"
    await publish_trigger(
        worker.web_port, trigger(tid, {"dwell": {"category": "cosmetics", "at_least": "3s"}})
    )
    member = uid("m")
    entered = await enter(send, member)
    fired = await actions_of(bootstrap, member, tid, timeout=10)
    assert fired and 2900 <= fired[0]["fired_at"] - entered["ts"] < 5000


async def test_absence_fires_when_time_passes_only_without_the_event(worker, send, bootstrap):
    tid = f"absent-{uuid.uuid4().hex[:6]}"
    await publish_trigger(
        worker.web_port,
        trigger(tid, {"event": "visit_started", "absent": {"event": "purchase", "within": "3s"}}),
    )
    browser, buyer = uid("m"), uid("m")
    started = await enter(send, browser)
    await enter(send, buyer)
    await entered(bootstrap, buyer)
    await buy(send, buyer)
    fired = await actions_of(bootstrap, browser, tid, timeout=10)
    assert fired and 2900 <= fired[0]["fired_at"] - started["ts"] < 5000
    assert await actions_of(bootstrap, buyer, tid, timeout=2, settle=0) == []


async def test_sequence_fires_on_the_second_event_within_the_window(worker, send, bootstrap):
    tid = f"seq-{uuid.uuid4().hex[:6]}"
    await publish_trigger(
        worker.web_port,
        trigger(
            tid,
            {"event": "zone_entered", "followed_by": {"event": "purchase", "within": "30s"}},
            zones=["cosmetics"],
        ),
    )
    member, stranger = uid("m"), uid("m")
    await enter(send, member)
    await entered(bootstrap, member)
    sale = await buy(send, member)
    fired = await actions_of(bootstrap, member, tid, timeout=10)
    assert [a["event_id"] for a in fired] == [sale["event_id"]]
    await buy(send, stranger)  # a purchase with no zone entry before it
    assert await actions_of(bootstrap, stranger, tid, timeout=2) == []


async def test_delay_acts_later_unless_cancelled(worker, send, bootstrap):
    tid = f"delay-{uuid.uuid4().hex[:6]}"
    await publish_trigger(
        worker.web_port,
        trigger(tid, {"event": "visit_ended", "delay": {"wait": "3s", "unless": ["purchase"]}}),
    )
    gone, back = uid("m"), uid("m")
    await enter(send, gone)
    await enter(send, back)
    ended = await collect(
        bootstrap,
        "derived-events",
        lambda e: e["member_id"] == back and e["type"] == "visit_ended",
        timeout=15,
    )
    assert ended
    await buy(send, back)  # comes back and buys before the delay is up
    fired = await actions_of(bootstrap, gone, tid, timeout=15)
    assert fired and fired[0]["fired_at"] - fired[0]["event_ts"] >= 0
    assert await actions_of(bootstrap, back, tid, timeout=2) == []


async def test_explain_tells_what_the_worker_then_does(worker, send, bootstrap):
    tid = f"regular-{uuid.uuid4().hex[:6]}"
    await publish_trigger(
        worker.web_port, trigger(tid, {"event": "checkin"}, **{"if": "member.visits > 100"})
    )
    member = uid("m")
    status, body = http(
        worker.web_port, "POST", f"/explain/{member}", {"type": "checkin", "store_id": FAST}
    )
    assert status == 200
    verdicts = {d["trigger"]: (d["verdict"], d["reason"]) for d in body["decisions"]}
    assert verdicts[tid] == ("not_matched", "condition")
    status, body = http(worker.web_port, "POST", f"/explain/{member}", {"store_id": FAST})
    assert status == 422 and body["errors"][0].startswith("type:")
    assert (
        http(worker.web_port, "POST", f"/explain/{member}", {"type": "checkin"}, token="nope")[0]
        == 401
    )
    # the decisions topic carries fired and held-out decisions (uplift's treated and control),
    # not the non-matches and suppressions /explain reports
    fires, no_consent = tid + "-fires", tid + "-push"
    only_this = {"if": f"member.member_id == '{member}'"}  # the worker is shared by the tests
    await publish_trigger(worker.web_port, trigger(fires, {"event": "checkin"}, **only_this))
    push = [{"type": "message", "channel": "push", "template": "hi"}]
    await publish_trigger(
        worker.web_port, trigger(no_consent, {"event": "checkin"}, then=push, **only_this)
    )
    _, body = http(
        worker.web_port, "POST", f"/explain/{member}", {"type": "checkin", "store_id": FAST}
    )
    verdicts = {d["trigger"]: (d["verdict"], d["reason"]) for d in body["decisions"]}
    assert verdicts[no_consent] == ("suppressed", "consent")
    checkin = ev("checkin", store_id=FAST, member_id=member)
    await send("checkins", checkin, key=member.encode())
    decisions = await collect(
        bootstrap, "decisions", lambda d: d["member_id"] == member, timeout=15, settle=2
    )
    published = {d["trigger_id"]: d["verdict"] for d in decisions}
    assert published.get(fires) == "fired"
    assert tid not in published and no_consent not in published


async def test_bad_trigger_posted_is_refused_with_field_errors(worker):
    status, body = http(
        worker.web_port,
        "POST",
        "/triggers",
        {
            "id": "Bad Id",
            "name": "x",
            "when": {"event": "checkin"},
            "if": "member.tier ==",
            "then": [],
        },
    )
    assert status == 422
    text = "\n".join(body["errors"])
    assert "id:" in text and "if: syntax error" in text and "then:" in text


async def test_a_new_trigger_applies_on_both_workers_without_restart(
    worker, second_worker, send, bootstrap
):
    deadline = time.monotonic() + 40
    while not (worker.ready() and second_worker.ready()):
        assert time.monotonic() < deadline, "the two workers never settled"
        await asyncio.sleep(0.2)
    tid = f"live-{uuid.uuid4().hex[:6]}"
    await publish_trigger(
        worker.web_port, trigger(tid, {"event": "checkin"}), worker.web_port, second_worker.web_port
    )
    members = [uid("m") for _ in range(16)]  # spread over every partition, so over both workers
    for m in members:
        await send("checkins", ev("checkin", store_id=FAST, member_id=m), key=m.encode())
    fired = await collect(
        bootstrap, "actions", lambda a: a["trigger_id"] == tid, count=len(members), timeout=20
    )
    assert sorted(a["member_id"] for a in fired) == sorted(members)
