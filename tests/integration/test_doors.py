"""The doors, on a live worker with real Kafka and Redis: no route without a key, no trigger text
that stops the pipeline, no poison record that stops an agent, no raw identifier in any topic."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from core.settings import ROOT
from infra.worker_process import health
from state.redis_store import as_bytes
from tests.integration.conftest import API_TOKEN, collect, http, publish_trigger
from tests.integration.test_ingestion import ev, uid

FAST = "test-fast"
PUBLIC = {"/", "/health", "/metrics"}  # liveness (minimal), and Prometheus by setting
SIGNED = {"/unsubscribe"}  # no key: the link's signature (state/member_data.py), else 403
CONSOLE = {"/console", "/console/{name}"}  # static files, no data: the user signs in with a key


def raw_request(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=b"{}" if method == "POST" else None
    )
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def served_routes() -> list[str]:
    """Every route the worker's web server serves, faust's included, as the worker builds it."""
    code = (
        "import json, app as a\n"
        "app = a.build()\n"
        "import agents, web.api\n"
        "agents.register()\n"
        "app.web.init_server()\n"
        "print(json.dumps(sorted({r.resource.canonical for r in app.web.web_app.router.routes()})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_route_refuses_a_request_without_a_key(worker):
    routes = served_routes()
    assert {"/members/{member_id}", "/triggers", "/explain/{member_id}"} <= set(routes)
    assert not any(r.startswith(("/table", "/router", "/graph", "/stats")) for r in routes)
    port = worker.web_port
    for route in routes:
        path = route.replace("{member_id}", "m-000001")
        for method in ("GET", "POST"):
            status = raw_request(port, method, path)
            if route in PUBLIC:
                assert status in (200, 405), (method, path, status)
            elif route in SIGNED:
                assert status == 403, (method, path, status)
                continue
            elif route in CONSOLE:
                assert status in (200, 404, 405), (method, path, status)
                continue
            else:
                assert status in (401, 404, 405), (method, path, status)
            bad_key = raw_request(port, method, path, {"Authorization": "Bearer wrong"})
            assert route in PUBLIC or bad_key in (401, 404, 405), (method, path, bad_key)
    for path in ("/table/member-state/m-000001/", "/router/", "/graph/", "/stats/"):
        assert raw_request(port, "GET", path) == 404, path
    # what the liveness probe tells a stranger: no partitions, no layout
    assert set(health(port) or {}) == {"status", "ready"}
    # a non-ASCII key is a wrong key, not a server error
    request = urllib.request.Request(f"http://127.0.0.1:{port}/triggers")
    request.add_unredirected_header("Authorization", "Bearer clé-ü")
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("accepted a wrong key")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401


def test_malformed_bodies_are_400_or_422_naming_the_field(worker):
    port, member = worker.web_port, uid("m")
    for body, field in [
        ({"type": "purchase", "store_id": "sh-pudong", "total": 2000}, None),
        ({"type": "checkin", "ts": "now"}, "ts"),
        ({"type": "purchase", "total": "lots"}, "total"),
        ({"type": "chekin"}, "type"),
        ([1, 2], "request"),
    ]:
        status, answer = http(port, "POST", f"/explain/{member}", body)
        if field is None:
            assert status == 200, answer  # a sale without items and receipt is explained
        else:
            assert status == 422 and answer["errors"][0].startswith(f"{field}:"), answer
    status, answer = http(port, "POST", "/triggers", {"id": "x", "when": {"event": "chekin"}})
    assert status == 422 and any("when.event" in e and "checkin" in e for e in answer["errors"])
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/triggers",
        method="POST",
        data=b"{not json",
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 400 and b"not JSON" in exc.read()


BAD_TRIGGERS: list[tuple[dict[str, Any], str]] = [
    ({"if": "member.tags == 'vip'"}, "use 'vip' in member.tags"),
    ({"if": "len('a' * 1000000000000) > 1"}, "repeating text"),
    ({"when": {"event": "checkin", "delay": {"wait": "99999999999w"}}}, "3660d"),
    ({"if": "len('ab' * 900000000) > 1"}, "repeating text"),
    ({"if": "1/0 > 0"}, "division by zero"),
    ({"if": "event.attrs.campaign.code == 'x'"}, "event has no field 'attrs'"),
]


async def test_bad_triggers_never_stop_a_good_one(worker, producer, bootstrap):
    """A good trigger fires on every check-in while every bad definition is thrown at the
    worker, through the API and straight onto the triggers topic."""
    good = f"good-{uid('t')}"
    base = {
        "name": "doors",
        "stores": [FAST],
        "then": [{"type": "message", "channel": "log", "template": "hi"}],
        "guardrails": {"quiet_hours": None, "max_event_age": "1h"},
    }
    await publish_trigger(worker.web_port, {**base, "id": good, "when": {"event": "checkin"}})
    members = [uid("m") for _ in range(10)]
    sent: list[str] = []
    statuses: list[str] = []
    rss: list[int] = []
    stop = asyncio.Event()

    async def stream() -> None:
        while not stop.is_set():
            for m in members:
                e = ev("checkin", store_id=FAST, member_id=m)
                await producer.send_and_wait("checkins", orjson.dumps(e), key=m.encode())
                sent.append(e["event_id"])
            await asyncio.sleep(0.5)

    async def watch() -> None:
        while not stop.is_set():
            statuses.append(str((health(worker.web_port) or {}).get("status")))
            rss.append(_rss_kb(worker.pid))
            await asyncio.sleep(1.0)

    tasks = [asyncio.create_task(stream()), asyncio.create_task(watch())]
    try:
        await asyncio.sleep(3)
        bad_ids = []
        for n, (over, message) in enumerate(BAD_TRIGGERS):
            doc = {**base, "id": f"bad-{n}-{uid('t')}", "when": {"event": "checkin"}, **over}
            status, answer = http(worker.web_port, "POST", "/triggers", doc)
            assert status == 422 and any(message in e for e in answer["errors"]), answer
            # as someone with write access to Kafka would: the worker refuses it too
            await producer.send_and_wait("triggers", orjson.dumps(doc), key=doc["id"].encode())
            bad_ids.append(doc["id"])
            await asyncio.sleep(1)
        await asyncio.sleep(8)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    refused = await collect(
        bootstrap,
        "dead-letter",
        lambda d: d["reason"] == "invalid_trigger" and _key(d) in bad_ids,
        count=len(bad_ids),
        timeout=20,
    )
    assert len(refused) == len(bad_ids)
    actions = await collect(
        bootstrap,
        "actions",
        lambda a: a["trigger_id"] == good,
        count=len(sent),
        timeout=30,
    )
    assert {a["event_id"] for a in actions} == set(sent)  # every check-in, none lost
    fired = sorted(a["fired_at"] for a in actions)
    gaps = [b - a for a, b in itertools.pairwise(fired)]
    assert max(gaps) < 5000, f"actions stopped for {max(gaps)} ms"
    assert set(statuses) == {"ok"}, statuses
    assert max(rss) < 1_000_000, f"worker grew to {max(rss)} kB"
    _, listing = http(worker.web_port, "GET", "/triggers")
    assert not {t["id"] for t in listing["triggers"]} & set(bad_ids)
    await producer.send_and_wait("triggers", None, key=good.encode())  # leave no live trigger


def _key(dead: dict[str, Any]) -> str:
    return base64.b64decode(dead.get("key_b64") or "").decode(errors="replace")


def _rss_kb(pid: int | None) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def test_a_poison_member_event_is_dead_lettered_and_the_next_one_acts(
    worker, producer, bootstrap
):
    tid = f"poison-{uid('t')}"
    await publish_trigger(
        worker.web_port,
        {
            "id": tid,
            "name": "after poison",
            "stores": [FAST],
            "when": {"event": "checkin"},
            "then": [{"type": "message", "channel": "log", "template": "hi"}],
            "guardrails": {"quiet_hours": None},
        },
    )
    member = uid("m")
    poison = {
        "event_id": uid("poison"),
        "member_id": member,
        "type": "purchase",
        "ts": int(time.time() * 1000),
        "store_id": FAST,
        "source": "pos",
        "attrs": {"kind": "sale", "total": "lots"},  # well-formed, breaks the fold
    }
    await producer.send_and_wait("member-events", orjson.dumps(poison), key=member.encode())
    after = ev("checkin", store_id=FAST, member_id=member)
    await producer.send_and_wait("checkins", orjson.dumps(after), key=member.encode())
    dead = await collect(
        bootstrap,
        "dead-letter",
        lambda d: (
            d["source_topic"] == "member-events"
            and poison["event_id"].encode() in base64.b64decode(d["value_b64"])
        ),
        timeout=20,
    )
    assert dead and dead[0]["reason"] == "internal" and "members:" in dead[0]["message"]
    acted = await collect(
        bootstrap,
        "actions",
        lambda a: a["event_id"] == after["event_id"] and a["trigger_id"] == tid,
        timeout=20,
    )
    assert acted
    # an event without a usable time, inside a batch: that event alone is dead-lettered
    malformed = {**poison, "event_id": uid("malformed"), "ts": "soon", "type": "checkin"}
    fine = ev("checkin", store_id=FAST, member_id=member)
    fine_canonical = {
        "event_id": fine["event_id"],
        "member_id": member,
        "type": "checkin",
        "ts": fine["ts"],
        "store_id": FAST,
        "source": "checkins",
        "attrs": {"kind": "checkin"},
    }
    await producer.send_and_wait(
        "member-events", orjson.dumps({"events": [malformed, fine_canonical]}), key=member.encode()
    )
    bad_item = await collect(
        bootstrap,
        "dead-letter",
        lambda d: (
            d["source_topic"] == "member-events"
            and malformed["event_id"].encode() in base64.b64decode(d["value_b64"])
        ),
        timeout=20,
    )
    assert bad_item and bad_item[0]["reason"] == "not_decodable" and bad_item[0]["index"] == 0
    assert "ts:" in bad_item[0]["message"]
    assert await collect(
        bootstrap,
        "actions",
        lambda a: a["event_id"] == fine["event_id"] and a["trigger_id"] == tid,
        timeout=20,
    )
    # bytes that are not JSON: dead-lettered too, and the next event still acts
    await producer.send_and_wait("member-events", b"\x00 not a record", key=member.encode())
    again = ev("checkin", store_id=FAST, member_id=member)
    await producer.send_and_wait("checkins", orjson.dumps(again), key=member.encode())
    undecodable = await collect(
        bootstrap,
        "dead-letter",
        lambda d: (
            d["reason"] == "not_decodable"
            and base64.b64decode(d["value_b64"]) == b"\x00 not a record"
        ),
        timeout=20,
    )
    assert undecodable and undecodable[0]["source_topic"] == "member-events"
    assert await collect(
        bootstrap,
        "actions",
        lambda a: a["event_id"] == again["event_id"] and a["trigger_id"] == tid,
        timeout=20,
    )
    assert (health(worker.web_port) or {}).get("status") == "ok"
    await producer.send_and_wait("triggers", None, key=tid.encode())  # leave no live trigger
    assert (health(worker.web_port) or {}).get("status") == "ok"


async def test_raw_identifiers_never_reach_any_topic_redis_or_table(worker, producer, bootstrap):
    digits = "".join(c for c in uid("") if c.isdigit()).ljust(8, "7")[:8]
    phone, phone2 = "139" + digits, "137" + digits
    dashed = f"136-{digits[:4]}-{digits[4:]}"
    mac = ":".join(f"{int(d) * 11:02x}" for d in digits[:6])
    member = uid("m")
    checkin = ev(
        "checkin",
        store_id=FAST,
        member_id=member,
        customer_phone=phone,
        client_mac=mac,
        profile={"mobile": phone2},
    )
    sale = ev(
        "sale",
        store_id=FAST,
        member_id=member,
        receipt_id=uid("r"),
        total=10.0,
        items=[{"sku": "s1", "qty": 1, "price": 10.0, "mobile": phone2}],
    )
    garbage = f"scanner dump: tel {dashed} dev {mac.upper()}".encode()
    await producer.send_and_wait("checkins", orjson.dumps(checkin), key=member.encode())
    await producer.send_and_wait("pos", orjson.dumps(sale), key=member.encode())
    await producer.send_and_wait("checkins", garbage, key=None)
    for e in (checkin, sale):
        assert await collect(
            bootstrap, "member-events", lambda r, e=e: r["event_id"] == e["event_id"]
        )
    assert await collect(bootstrap, "dead-letter", lambda d: d["reason"] == "not_json", timeout=15)
    await asyncio.sleep(2)  # changelog writes and Redis calls of those events
    planted = [
        v.encode() for v in (phone, phone2, dashed, mac, mac.upper(), dashed.replace("-", ""))
    ]
    leaks = await _scan_topics(bootstrap, planted)
    leaks += await _scan_redis(worker.env["REDIS_URL"], planted)
    data_dir = worker.workdir / f"{worker.name}-data"
    for path in data_dir.rglob("*"):
        if path.is_file() and any(p in path.read_bytes() for p in planted):
            leaks.append(f"table file {path.name}")
    log = worker.log.read_bytes()
    leaks += [f"worker log: {p!r}" for p in planted if p in log]
    assert leaks == []


INPUTS = {"checkins", "wifi", "beacons", "pos", "identity", "members"}


async def _scan_topics(bootstrap: str, planted: list[bytes]) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t not in INPUTS]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    leaks: list[str] = []
    try:
        end = await consumer.end_offsets(list(consumer.assignment()))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                for r in records:
                    blob = (r.key or b"") + (r.value or b"")
                    leaks += [f"{tp.topic}@{r.offset}" for p in planted if p in blob]
            positions = {tp: await consumer.position(tp) for tp in end}
            if all(positions[tp] >= o for tp, o in end.items()):
                break
    finally:
        await consumer.stop()
    return leaks


async def _scan_redis(url: str, planted: list[bytes]) -> list[str]:
    client = aioredis.Redis.from_url(url)
    leaks: list[str] = []
    try:
        async for key in client.scan_iter(count=1000):
            kind = as_bytes(await client.type(key)).decode()
            parts: list[Any] = []
            if kind == "string":
                parts = [await client.get(key) or b""]
            elif kind == "hash":
                parts = [as_bytes(k) + as_bytes(v) for k, v in (await client.hgetall(key)).items()]
            elif kind == "set":
                parts = list(await client.smembers(key))
            elif kind == "zset":
                parts = list(await client.zrange(key, 0, -1))
            elif kind == "list":
                parts = list(await client.lrange(key, 0, -1))
            blob = as_bytes(key) + b"".join(as_bytes(p) for p in parts)
            leaks += [f"redis {key!r}" for p in planted if p in blob]
    finally:
        await client.aclose()
    return leaks


async def test_trigger_files_seed_only_ids_the_topic_lacks(infra):
    """A worker restarting with the sample files must not undo an edit made through the API."""
    from infra.kafka_admin import create_topics
    from triggers.loader import parse_triggers
    from triggers.registry import published as published_records
    from triggers.registry import seed

    topic = f"triggers-seed-{uid('t')}"
    await create_topics(infra.bootstrap, {topic: {"cleanup.policy": "compact"}}, 1)

    def definition(tid: str, name: str) -> Any:
        doc = {
            "id": tid,
            "name": name,
            "when": {"event": "checkin"},
            "then": [{"type": "message", "channel": "log", "template": "hi"}],
        }
        return parse_triggers([doc], "test")[0]

    edited = definition("welcome", "edited through the API")
    from triggers.registry import publish

    await publish(infra.bootstrap, topic, [edited])
    published, kept = await seed(
        infra.bootstrap, topic, [definition("welcome", "from the file"), definition("new", "n")]
    )
    assert (published, kept) == (["new"], ["welcome"])
    assert set(await published_records(infra.bootstrap, topic)) == {"welcome", "new"}
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=infra.bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        names = {}
        for records in (await consumer.getmany(timeout_ms=3000)).values():
            names.update(
                {r.key.decode(): orjson.loads(r.value)["definition"]["name"] for r in records}
            )
    finally:
        await consumer.stop()
    assert names == {"welcome": "edited through the API", "new": "n"}
