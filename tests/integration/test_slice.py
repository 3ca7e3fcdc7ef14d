"""The thin slice end to end: check-in -> member-events -> trigger -> actions -> deliveries."""

from __future__ import annotations

import base64
import time

import orjson

from tests.integration.conftest import collect, give_consent


async def test_checkin_fires_welcome_action_within_5s(worker, send, bootstrap, checkin_factory):
    event = checkin_factory()
    await give_consent(send, bootstrap, event["member_id"])
    started = time.monotonic()
    await send("checkins", event, key=event["member_id"].encode())
    actions = await collect(
        bootstrap, "actions", lambda a: a["member_id"] == event["member_id"], timeout=5.0
    )
    assert time.monotonic() - started < 5.0
    assert actions[0]["trigger_id"] == "first-checkin-welcome"
    assert actions[0]["event_id"] == event["event_id"]
    assert "Jing'an Flagship" in actions[0]["payload"]["text"]
    deliveries = await collect(
        bootstrap, "deliveries", lambda d: d["action_id"] == actions[0]["action_id"]
    )
    assert deliveries[0]["outcome"] == "sent"


async def test_second_checkin_same_day_does_not_fire_again(
    worker, send, bootstrap, checkin_factory
):
    first = checkin_factory()
    second = checkin_factory(member_id=first["member_id"])
    await give_consent(send, bootstrap, first["member_id"])
    key = first["member_id"].encode()  # producers key by identifier: order is kept per key
    await send("checkins", first, key=key)
    await send("checkins", second, key=key)
    events = await collect(
        bootstrap,
        "member-events",
        lambda e: e["member_id"] == first["member_id"] and e["type"] == "checkin",
        count=2,
    )
    assert {e["event_id"] for e in events} == {first["event_id"], second["event_id"]}
    actions = await collect(
        bootstrap,
        "actions",
        lambda a: a["member_id"] == first["member_id"],
        timeout=6.0,
        settle=2.0,
    )
    welcomes = [a["event_id"] for a in actions if a["trigger_id"] == "first-checkin-welcome"]
    assert welcomes == [first["event_id"]]
    assert second["event_id"] not in {a["event_id"] for a in actions}


async def test_malformed_checkin_goes_to_dead_letter_and_worker_keeps_going(
    worker, send, bootstrap, checkin_factory
):
    bad = b'{"event_id": "x1", "ts": "not a time", "store_id": "sh-jingan", "member_id": "m"}'
    await send("checkins", bad, key=b"bad-key")
    letters = await collect(
        bootstrap, "dead-letter", lambda d: base64.b64decode(d["value_b64"]) == bad
    )
    assert letters[0]["reason"] == "schema"
    assert "ts" in letters[0]["message"]
    assert letters[0]["source_topic"] == "checkins"
    assert base64.b64decode(letters[0]["key_b64"]) == b"bad-key"
    assert letters[0]["offset"] >= 0

    good = checkin_factory()
    await give_consent(send, bootstrap, good["member_id"])
    await send("checkins", good)
    actions = await collect(bootstrap, "actions", lambda a: a["member_id"] == good["member_id"])
    assert actions and worker.ready()


async def test_each_kind_of_bad_bytes_gets_its_reason(worker, send, bootstrap, checkin_factory):
    cases = {
        b"\xff\xfe garbage": "not_json",
        b"[1,2]": "not_object",
        orjson.dumps(checkin_factory(member_id=None)): "no_identifier",
        orjson.dumps(checkin_factory(kind="teleport")): "unknown_kind",
        orjson.dumps(checkin_factory(ts=int(time.time() * 1000) + 3_600_000)): "ts_future",
        b"{" + b'"pad": "' + b"x" * 70_000 + b'"}': "too_large",
    }
    for raw in cases:
        await send("checkins", raw)
    letters = await collect(
        bootstrap,
        "dead-letter",
        lambda d: base64.b64decode(d["value_b64"]) in cases,
        count=len(cases),
        timeout=10.0,
    )
    got = {base64.b64decode(d["value_b64"]): d["reason"] for d in letters}
    assert got == cases
