"""The closed loop on real Kafka + Redis: a coupon trigger with a 50 % holdout for 200 members,
codes redeemed at the till, control members buying too; the report and the `conversions` topic
match what this test counts itself, uplift included."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.integration.conftest import collect, http, publish_trigger
from tests.integration.test_delivery import FAST, consenting, push_trigger, until
from tests.integration.test_ingestion import ev
from triggers.report import newcombe

N = 200


async def test_redemptions_and_conversions_are_attributed_and_reported_with_uplift(
    worker, receiver, send, bootstrap
):
    tag = uuid.uuid4().hex[:6]
    tid = f"loop-{tag}"
    started = int(time.time() * 1000) - 1000
    coupon = {"type": "coupon", "pool": "welcome-back-20", "value": 20, "template": "{coupon.code}"}
    doc = push_trigger(
        tid,
        then=[coupon],
        guardrails={"quiet_hours": None, "max_event_age": "10m", "holdout": 0.5},
        goal={"within": "7d", "min_total": 100},
    )
    await publish_trigger(worker.web_port, doc)
    members = [f"m-loop-{tag}-{n:03d}" for n in range(N)]
    profiles = [ev("profile", member_id=m, consent={"push": True}) for m in members]
    for p in profiles:
        await send("members", p, key=p["member_id"].encode())
    ids = {p["event_id"] for p in profiles}
    await collect(bootstrap, "member-events", lambda e: e["event_id"] in ids, count=N, timeout=60)
    for m in members:
        e = ev("checkin", store_id=FAST, member_id=m, test=tid)
        await send("checkins", e, key=m.encode())
    decided = await collect(
        bootstrap,
        "decisions",
        lambda d: d["trigger_id"] == tid and d["verdict"] in ("fired", "held_out"),
        count=N,
        timeout=60,
    )
    treated = {d["member_id"] for d in decided if d["verdict"] == "fired"}
    control = {d["member_id"] for d in decided if d["verdict"] == "held_out"}
    assert len(treated | control) == N and 60 < len(treated) < 140  # about half held out

    def codes() -> dict[str, str]:
        return {
            b["member_id"]: b["coupon"]["code"]
            for b in list(receiver.bodies.values())
            if b["trigger_id"] == tid
        }

    await until(lambda: len(codes()) == len(treated), 60, "coupons not all delivered")
    sent = codes()
    redeemers = sorted(treated)[: len(treated) // 2]
    buyers = sorted(control)[: len(control) // 4]
    sales = [
        ev("sale", store_id=FAST, member_id=m, receipt_id=f"r-{m}", total=200.0, coupons=[sent[m]])
        for m in redeemers
    ]
    sales += [
        ev("sale", store_id=FAST, member_id=m, receipt_id=f"r-{m}", total=200.0) for m in buyers
    ]
    # a code brought to the till by someone else (a friend, a guest sale without a member) is
    # the issuing trigger's redemption, on the member it was sent to; a made-up code is unknown
    stranger = sorted(control)[-1]
    gifted = sorted(treated)[-1]  # not among the redeemers: their code is still unused
    lent = sorted(treated)[-2]
    assert gifted not in redeemers and lent not in redeemers
    sales.append(
        ev(
            "sale",
            store_id=FAST,
            member_id=stranger,
            receipt_id=f"r-x-{tag}",
            total=50.0,
            coupons=[sent[gifted], "WB20-NOSUCHCODE0"],
        )
    )
    sales.append(
        ev("sale", store_id=FAST, receipt_id=f"r-g-{tag}", total=80.0, coupons=[sent[lent]])
    )
    for s in sales:
        await send("pos", s, key=s.get("member_id", "guest").encode())
    sale_ids = {s["event_id"] for s in sales}
    found = await collect(
        bootstrap,
        "conversions",
        lambda c: c["event_id"] in sale_ids,
        count=2 * len(redeemers) + len(buyers) + 3,
        timeout=60,
        settle=2.0,
    )
    attributed = [c for c in found if c["kind"] == "redemption" and c["outcome"] == "attributed"]
    assert {c["member_id"] for c in attributed} == {*redeemers, gifted, lent}
    assert all(c["trigger_id"] == tid for c in attributed)
    by_others = {c["member_id"]: c["redeemed_by"] for c in attributed if "redeemed_by" in c}
    assert by_others == {gifted: stranger, lent: f"guest-{FAST}"}
    assert [c["outcome"] for c in found if c["member_id"] == stranger] == ["unknown_code"]
    conversions = [c for c in found if c["kind"] == "conversion"]
    assert {c["member_id"] for c in conversions if c["group"] == "treated"} == set(redeemers)
    assert {c["member_id"] for c in conversions if c["group"] == "control"} == set(buyers)

    # a child process reads decisions, deliveries and conversions from the test's start
    path = f"/triggers/{tid}/report?from={started}"
    status, report = http(worker.web_port, "GET", path, timeout=120)
    assert status == 200, report
    r = report["triggers"][tid]
    assert (r["fired"], r["held_out"]) == (len(treated), len(control))
    assert (r["redeemed"], r["converted"], r["converted_control"]) == (
        len(redeemers) + 2,
        len(redeemers),
        len(buyers),
    )
    assert r["delivered"] == len(treated) and r["revenue"] == 200.0 * len(redeemers)
    assert r["coupon_cost"] == 20.0 * (len(redeemers) + 2)
    d, lo, hi = newcombe(len(redeemers), len(treated), len(buyers), len(control))
    assert r["uplift"]["difference"] == round(d, 4)
    assert r["uplift"]["ci95"] == [round(lo, 4), round(hi, 4)]
    assert r["uplift"]["significant"] == (lo > 0 or hi < 0)
    assert report["redemptions_not_attributed"].get("unknown_code", 0) >= 1


async def test_an_expired_code_and_a_code_of_another_pool_are_counted_not_attributed(
    worker, receiver, send, bootstrap
):
    tid = f"expiry-{uuid.uuid4().hex[:6]}"
    coupon = {
        "type": "coupon",
        "pool": "welcome-back-20",
        "value": 20,
        "expiry": "2s",
        "template": "{coupon.code}",
    }
    await publish_trigger(worker.web_port, push_trigger(tid, then=[coupon]))
    (member,) = await consenting(send, bootstrap, 1)
    await send(
        "checkins", ev("checkin", store_id=FAST, member_id=member, test=tid), member.encode()
    )
    await until(
        lambda: any(b["trigger_id"] == tid for b in list(receiver.bodies.values())), 30, "no coupon"
    )
    (body,) = [b for b in list(receiver.bodies.values()) if b["trigger_id"] == tid]
    await asyncio.sleep(max(0.0, body["coupon"]["expires_at"] / 1000 - time.time()) + 1)
    other_pool = "BT30-" + body["coupon"]["code"].split("-", 1)[1]  # same shape, not issued
    sale = ev(
        "sale",
        store_id=FAST,
        member_id=member,
        receipt_id=f"r-{tid}",
        total=99.0,
        coupons=[body["coupon"]["code"], other_pool],
    )
    await send("pos", sale, key=member.encode())
    found = await collect(
        bootstrap, "conversions", lambda c: c["event_id"] == sale["event_id"], count=2, timeout=30
    )
    outcomes = {c["code"]: c["outcome"] for c in found if c["kind"] == "redemption"}
    assert outcomes == {body["coupon"]["code"]: "expired", other_pool: "unknown_code"}
    assert all(c.get("trigger_id") in (tid, None) for c in found)
