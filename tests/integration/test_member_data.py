"""Member data rights on a live worker, real Kafka and Redis: erasure leaves no trace, consent
changes and the unsubscribe link, unbinding an identifier."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from core.settings import Settings
from state.identity import keyed_hash
from state.member_data import erased_key, erased_mark_s, member_hash
from state.rebuild import restore_erasure_marks
from tests.integration.conftest import (
    collect,
    get_member,
    give_consent,
    http,
    latest_state,
    publish_trigger,
    run_cli,
)
from tests.integration.test_delivery import FAST, push_trigger, until
from tests.integration.test_ingestion import ev, uid, unique_phone
from tests.integration.test_lifecycle import keys, wait_key
from tests.integration.test_operations import metrics_text


async def latest_by_key(bootstrap: str, topic: str, wanted: set[bytes]) -> dict[bytes, Any]:
    """The last value of each wanted key on a (compacted) topic: what a rebuild would read."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: dict[bytes, Any] = {}
    try:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    if r.key in wanted:
                        found[r.key] = r.value
    finally:
        await consumer.stop()
    return found


def redis_mentions(url: str, needles: list[str]) -> list[str]:
    """Every Redis key whose name or value contains one of `needles`."""
    client: Any = redis.Redis.from_url(url)
    hits = []
    for name in client.scan_iter(count=1000):
        kind = client.type(name).decode()
        if kind == "string":
            values = [client.get(name) or b""]
        elif kind == "set":
            values = list(client.smembers(name))
        elif kind == "hash":
            values = [*client.hkeys(name), *client.hvals(name)]
        elif kind == "zset":
            values = list(client.zrange(name, 0, -1))
        elif kind == "list":
            values = list(client.lrange(name, 0, -1))
        else:
            values = []
        blob = b"\x00".join([name, *values])
        hits += [f"{name!r}: {n}" for n in needles if n.encode() in blob]
    return hits


async def register(send, bootstrap, member: str, **identifiers: str) -> None:
    e = ev("registration", member_id=member, **identifiers)
    await send("identity", e, key=member.encode())
    await collect(bootstrap, "member-events", lambda x: x["event_id"] == e["event_id"])


async def api_cli(
    worker_env: dict[str, str], port: int, key: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`storepulse ARGS...` against the worker's API with `key`."""
    api = {"STOREPULSE_API_URL": f"http://127.0.0.1:{port}", "STOREPULSE_API_KEY": key}
    env = {**worker_env, **api}
    return await asyncio.to_thread(run_cli, env, *args, timeout=60)


async def test_an_erased_member_leaves_no_trace_in_tables_redis_or_compacted_topics(
    worker, worker_env, receiver, send, bootstrap
):
    tag = uid("erase")
    who = keys(worker_env, tag)
    await wait_key(worker.web_port, who["admin"])
    settings = Settings.from_env(worker_env)
    tid = f"erase-{uuid.uuid4().hex[:6]}"
    coupon = {"type": "coupon", "pool": "welcome-back-20", "value": 20, "template": "{coupon.code}"}
    await publish_trigger(worker.web_port, push_trigger(tid, then=[coupon]))
    member, card, phone, openid = uid("m"), uid("card"), unique_phone(), uid("oid")
    await register(send, bootstrap, member, member_card=card, phone=phone, openid=openid)
    await give_consent(send, bootstrap, member, tags=["vip"])
    checkin = ev("checkin", store_id=FAST, openid=openid, test=tid)
    sale = ev("sale", store_id=FAST, receipt_id=uid("r"), total=880.0, member_card=card)
    await send("checkins", checkin, key=openid.encode())
    await send("pos", sale, key=card.encode())
    state = await latest_state(
        bootstrap, member, lambda s: s.get("visits") == 1 and s.get("points", 0) > 0
    )
    assert state and state["points"] == 880, state
    await until(
        lambda: any(b["trigger_id"] == tid for b in receiver.bodies.values()), 20, "no coupon"
    )
    (code,) = [b["coupon"]["code"] for b in receiver.bodies.values() if b["trigger_id"] == tid]
    hashed_phone = keyed_hash(settings.hash_secret, "phone", phone)
    idents = [f"member_card:{card}", f"phone:{hashed_phone}", f"openid:{openid}"]
    assert len(redis_mentions(worker_env["REDIS_URL"], [member])) >= 3  # bindings, index

    # Before leaving, the member asks for a copy of their data (access request).
    status, body = http(worker.web_port, "GET", f"/members/{member}/export", token=who["editor"])
    assert status == 403, body  # exports are for admins
    copy = await api_cli(worker_env, worker.web_port, who["admin"], "members", "export", member)
    assert copy.returncode == 0, copy.stderr
    exported = orjson.loads(copy.stdout)
    assert {(i["kind"], i["value"], i["hashed"]) for i in exported["identifiers"]} == {
        ("member_card", card, False),
        ("phone", hashed_phone, True),
        ("openid", openid, False),
    }
    held = exported["state"]
    assert (held["points"], held["visits"], held["consent"]["push"]) == (880, 1, True), held
    assert code in held["coupons"] and "vip" in held["crm_tags"]
    assert phone not in copy.stdout  # the raw number is never stored, so never exported
    (asked,) = await collect(
        bootstrap,
        "member-audit",
        lambda a: a["member"] == member_hash(settings, member) and a["change"] == "export",
    )
    assert asked["by"] == f"admin-{tag}" and asked["detail"] == {"identifiers": 3, "state": True}

    status, body = http(worker.web_port, "DELETE", f"/members/{member}", token=who["editor"])
    assert status == 403, body  # erasure is for admins
    # `storepulse members erase` calls the same route
    erased = await api_cli(worker_env, worker.web_port, who["admin"], "members", "erase", member)
    assert erased.returncode == 0, erased.stderr
    report = orjson.loads(erased.stdout)
    assert report["identifiers"] == 3 and report["state"] is True

    await until(lambda: get_member(worker.web_port, member)[0] == 404, 15, "state still served")
    status, body = http(worker.web_port, "GET", f"/members/{member}/export", token=who["admin"])
    assert status == 404, body  # nothing held any more
    assert await latest_state(bootstrap, member, lambda s: False, timeout=1) is None  # tombstone
    assert redis_mentions(worker_env["REDIS_URL"], [member, card, openid, hashed_phone]) == []
    assert report["coupon_codes"] == 1
    (kept,) = (await latest_by_key(bootstrap, "coupon-codes", {code.encode()})).values()
    assert member.encode() not in kept and orjson.loads(kept)["status"] == "reserved"
    bindings = await latest_by_key(bootstrap, "identity-bindings", {i.encode() for i in idents})
    assert set(bindings) == {i.encode() for i in idents} and set(bindings.values()) == {None}
    profile = await latest_by_key(bootstrap, "members", {member.encode()})
    assert profile == {member.encode(): None}
    (audit,) = await collect(
        bootstrap,
        "member-audit",
        lambda a: a["member"] == member_hash(settings, member) and a["change"] == "erasure",
    )
    assert audit["change"] == "erasure" and audit["by"].startswith("admin-")
    assert member.encode() not in orjson.dumps(audit)
    # the card is a stranger now: a sale with it belongs to a new anonymous visitor
    again = ev("sale", store_id=FAST, receipt_id=uid("r"), total=10.0, member_card=card)
    await send("pos", again, key=card.encode())
    (forwarded,) = await collect(
        bootstrap, "member-events", lambda e: e["event_id"] == again["event_id"]
    )
    assert forwarded["member_id"].startswith("anon-")
    assert get_member(worker.web_port, member)[0] == 404
    # An action of theirs still in flight (fired just before, not yet dispatched) is not sent:
    # dispatch finds the erasure's mark and counts it, without a deliveries record naming them.
    now = int(time.time() * 1000)
    late = {
        "action_id": uuid.uuid4().hex,
        "trigger_id": tid,
        "member_id": member,
        "kind": "message",
        "channel": "push",
        "payload": {"template": "still there?"},
        "event_id": uid("late"),
        "event_ts": now,
        "fired_at": now,
    }
    await send("actions", {"actions": [late]}, key=member.encode())
    await until(lambda: erased_suppressions(worker.web_port) >= 1, 20, "not suppressed")
    assert late["action_id"] not in receiver.bodies
    # Redis lost its data: the rebuild puts the mark back from the erasure on member-audit.
    client: Any = redis.Redis.from_url(worker_env["REDIS_URL"])
    mark = erased_key(settings, member)
    assert client.delete(mark) == 1
    assert await restore_erasure_marks(aioredis.Redis.from_url(worker_env["REDIS_URL"]), settings)
    assert 0 < client.ttl(mark) <= erased_mark_s(settings)
    later = {**late, "action_id": uuid.uuid4().hex, "event_id": uid("later")}
    await send("actions", {"actions": [later]}, key=member.encode())
    await until(lambda: erased_suppressions(worker.web_port) >= 2, 20, "not suppressed after")
    assert later["action_id"] not in receiver.bodies


def erased_suppressions(port: int) -> float:
    text = metrics_text(port)
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("storepulse_deliveries_total{") and 'reason="erased"' in line
    )


def fetch(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_an_unsubscribe_link_and_a_service_desk_opt_out_stop_messages(
    worker, worker_env, receiver, send, bootstrap
):
    who = keys(worker_env, uid("consent"))
    await wait_key(worker.web_port, who["viewer"])
    tid = f"unsub-{uuid.uuid4().hex[:6]}"
    doc = push_trigger(tid)
    doc["then"] = [{"type": "message", "channel": "push", "template": "hi {unsubscribe_url}"}]
    await publish_trigger(worker.web_port, doc)
    member = uid("m")
    await give_consent(send, bootstrap, member)
    await send(
        "checkins", ev("checkin", store_id=FAST, member_id=member, test=tid), member.encode()
    )
    await until(
        lambda: any(b["trigger_id"] == tid for b in receiver.bodies.values()), 20, "no push"
    )
    (text,) = [b["text"] for b in receiver.bodies.values() if b["trigger_id"] == tid]
    url = text.removeprefix("hi ")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["m"] == [member] and query["c"] == ["push"]
    forged = url.replace(f"m={member}", "m=someone-else")
    assert fetch(forged)[0] == 403 and fetch(forged, "POST")[0] == 403
    status, page = fetch(url)
    assert status == 200 and "<form" in page  # GET only asks: link scanners must not opt out
    assert (await latest_state(bootstrap, member, lambda s: True))["consent"]["push"] is True
    status, page = fetch(url, "POST")
    assert status == 200 and "push" in page

    def consent() -> dict[str, Any]:
        status, body = get_member(worker.web_port, member)
        return body["member"].get("consent_at", {}) if status == 200 else {}

    await until(lambda: consent().get("push", [0, ""])[1] == "unsubscribe_link", 15, "not applied")
    await send(
        "checkins", ev("checkin", store_id=FAST, member_id=member, test=tid), member.encode()
    )

    def why() -> list[str]:
        _, body = http(worker.web_port, "GET", f"/members/{member}/decisions?trigger={tid}")
        return [d["reason"] for d in body["decisions"]]

    await until(lambda: "consent" in why(), 15, f"no consent suppression: {why()}")
    assert sum(b["trigger_id"] == tid for b in receiver.bodies.values()) == 1

    # the service desk: an editor may change consent, a viewer may not; the latest time wins
    path = f"/members/{member}/consent/wechat"
    assert http(worker.web_port, "PUT", path, {"granted": False}, who["viewer"])[0] == 403
    assert http(worker.web_port, "PUT", path, {"granted": "no"}, who["editor"])[0] == 422
    status, body = http(
        worker.web_port, "PUT", path, {"granted": False, "source": "service-desk"}, who["editor"]
    )
    assert status == 202, body
    await until(lambda: consent().get("wechat", [0, ""])[1] == "service-desk", 15, "not applied")
    old = {
        "event_id": uid("crm"),
        "ts": int(time.time() * 1000) - 60_000,  # an export from a minute ago says yes
        "kind": "profile",
        "member_id": member,
        "consent": {"wechat": True},
        "first_name": "Mei",
    }
    await send("members", old, key=member.encode())
    await until(
        lambda: get_member(worker.web_port, member)[1]["member"].get("first_name") == "Mei",
        15,
        "profile not applied",
    )
    record = get_member(worker.web_port, member)[1]["member"]
    assert record["consent"]["wechat"] is False and record["consent"]["push"] is False


async def test_an_unbound_identifier_resolves_as_new_and_can_be_bound_again(
    worker, worker_env, send, bootstrap
):
    who = keys(worker_env, uid("unbind"))
    await wait_key(worker.web_port, who["admin"])
    first, second, openid = uid("m"), uid("m"), uid("oid")
    await register(send, bootstrap, first, openid=openid)

    async def resolved() -> str:
        e = ev("checkin", store_id=FAST, openid=openid)
        await send("checkins", e, key=openid.encode())
        (got,) = await collect(bootstrap, "member-events", lambda x: x["event_id"] == e["event_id"])
        return str(got["member_id"])

    assert await resolved() == first
    body = {"kind": "openid", "value": openid}
    path = f"/members/{first}/unbind"
    assert http(worker.web_port, "POST", path, body, who["editor"])[0] == 403
    status, answer = http(worker.web_port, "POST", path, body, who["admin"])
    assert status == 202, answer
    (audit,) = await collect(
        bootstrap, "identity-audit", lambda a: a.get("event_id") == answer["event_id"]
    )
    assert (audit["change"], audit["outcome"], audit["member_id"]) == ("unbind", "unbound", first)
    assert audit["by"].startswith("admin-")
    assert (await resolved()).startswith("anon-")
    await register(send, bootstrap, second, openid=openid)  # no conflict: it is free again
    deadline = time.monotonic() + 10
    while (now := await resolved()) != second:
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.5)


async def test_reindex_puts_back_the_identifiers_of_bindings_made_before_the_index(
    worker, worker_env, send, bootstrap
):
    """Bindings from before erasure's per-member index: `storepulse members reindex` reads
    identity-bindings and indexes each under its member (an unbound one is not)."""
    member, card, openid = uid("m"), uid("card"), uid("oid")
    await register(send, bootstrap, member, member_card=card, openid=openid)
    client: Any = redis.Redis.from_url(worker_env["REDIS_URL"])
    index = f"sp:mid:{{{member}}}"
    assert client.smembers(index) == {f"member_card:{card}".encode(), f"openid:{openid}".encode()}
    client.delete(index)  # as for a member bound before this index existed
    done = await asyncio.to_thread(run_cli, worker_env, "members", "reindex")
    assert done.returncode == 0 and "indexed" in done.stdout, done.stderr
    assert client.smembers(index) == {f"member_card:{card}".encode(), f"openid:{openid}".encode()}
