"""Trigger lifecycle on live workers: named keys and roles, versions with authors, diff and
rollback, pause and resume on two workers within a second, the audit log (real Kafka + Redis)."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from tests.integration.conftest import collect, http, publish_trigger, run_cli
from tests.integration.test_delivery import FAST, consenting, push_trigger, until
from tests.integration.test_ingestion import ev
from web.keys import add_key


def keys(worker_env: dict[str, str], tag: str) -> dict[str, str]:
    path = Path(worker_env["STOREPULSE_API_KEYS_FILE"])
    return {role: add_key(path, f"{role}-{tag}", role) for role in ("viewer", "editor", "admin")}


async def wait_key(port: int, key: str) -> None:
    """Workers read the keys file again within a second."""
    deadline = time.monotonic() + 5
    while http(port, "GET", "/triggers", token=key)[0] != 200:
        assert time.monotonic() < deadline, "a new key was not picked up"
        await asyncio.sleep(0.2)


async def two_workers_with_keys(
    worker: Any, second_worker: Any, worker_env: dict[str, str]
) -> tuple[str, dict[str, str], tuple[int, int]]:
    """Both workers settled, with a new key of each role that both have picked up."""
    await until(lambda: worker.ready() and second_worker.ready(), 40, "workers never settled")
    tag = uuid.uuid4().hex[:6]
    k = keys(worker_env, tag)
    ports = (worker.web_port, second_worker.web_port)
    for p in ports:
        await wait_key(p, k["editor"])
    return tag, k, ports


async def test_roles_decide_who_may_publish_and_the_audit_names_the_editor(worker, worker_env):
    tag = uuid.uuid4().hex[:6]
    k = keys(worker_env, tag)
    port = worker.web_port
    await wait_key(port, k["viewer"])
    tid = f"life-{tag}"
    doc = push_trigger(tid)
    status, body = http(port, "POST", "/triggers", doc, token=k["viewer"])
    assert status == 403 and "viewer" in body["error"]
    assert http(port, "POST", "/triggers", doc, token="sp_not-a-key")[0] == 401
    status, body = http(
        port, "POST", "/triggers", {"definition": doc, "note": "first cut"}, token=k["editor"]
    )
    assert status == 202 and body["version"] == 1 and body["author"] == f"editor-{tag}"
    await until(lambda: bool(http(port, "GET", f"/triggers/{tid}")[1].get("version")), 5, "v1")
    changed = {**doc, "name": "second name"}
    status, body = http(
        port, "POST", "/triggers", {"definition": changed, "expected_version": 0}, token=k["editor"]
    )
    assert status == 409  # someone (this test) published v1 in between
    status, body = http(
        port, "POST", "/triggers", {"definition": changed, "expected_version": 1}, token=k["editor"]
    )
    assert status == 202 and body["version"] == 2

    async def versions() -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while True:
            status, body = http(port, "GET", f"/triggers/{tid}/versions", token=k["viewer"])
            if status == 200 and len(body["versions"]) >= 2:
                return list(body["versions"])
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.2)

    found = await versions()
    assert [(v["version"], v["author"], v["note"]) for v in found[:2]] == [
        (1, f"editor-{tag}", "first cut"),
        (2, f"editor-{tag}", ""),
    ]
    status, body = http(port, "GET", f"/triggers/{tid}/diff?from=1&to=2", token=k["viewer"])
    assert status == 200 and '+  "name": "second name"' in body["diff"]
    status, body = http(port, "POST", f"/triggers/{tid}/rollback?to=1", token=k["editor"])
    assert status == 200 and body["version"] == 3 and body["note"] == "rollback to v1"
    await until(
        lambda: http(port, "GET", f"/triggers/{tid}")[1].get("definition", {}).get("name") == tid,
        5,
        "the rollback never took effect",
    )
    status, body = http(port, "DELETE", f"/triggers/{tid}", token=k["editor"])
    assert status == 409 and "archive" in body["error"]  # only drafts are deleted
    # A change right after another starts from it (read your writes): a pause a moment after a
    # rollback pauses the version rolled back to, not the one before it.
    status, body = http(port, "POST", f"/triggers/{tid}/rollback?to=2", token=k["editor"])
    assert status == 200 and body["version"] == 4, body
    status, body = http(port, "POST", f"/triggers/{tid}/pause", token=k["editor"])
    assert status == 200 and (body["version"], body["status"]) == (4, "paused"), body
    status, body = http(port, "GET", f"/triggers/{tid}", token=k["viewer"])
    assert (body["version"], body["status"], body["definition"]["name"]) == (
        4,
        "paused",
        "second name",
    ), body
    status, body = http(port, "GET", f"/audit?trigger={tid}", token=k["viewer"])
    assert [e["change"] for e in body["entries"]] == [
        "publish",
        "publish",
        "rollback",
        "rollback",
        "pause",
    ]
    assert {e["author"] for e in body["entries"]} == {f"editor-{tag}"}
    assert http(port, "POST", f"/triggers/{tid}/archive", token=k["editor"])[0] == 200


async def test_a_paused_trigger_stops_on_both_workers_within_a_second(
    worker, second_worker, worker_env, receiver, send, bootstrap
):
    tag, k, ports = await two_workers_with_keys(worker, second_worker, worker_env)
    tid = f"pause-{tag}"
    # on the `log` channel: the sample triggers' welcome pushes to these new members fill the
    # push cap (3 a day) with this trigger's first fire, and the resumed round would be capped
    log = [{"type": "message", "channel": "log", "template": "hello {member.member_id}"}]
    await publish_trigger(worker.web_port, push_trigger(tid, then=log), *ports)
    members = await consenting(send, bootstrap, 6)

    async def fire_round(label: str) -> set[str]:
        events = [ev("checkin", store_id=FAST, member_id=m, test=tid, round=label) for m in members]
        for e in events:
            await send("checkins", e, key=e["member_id"].encode())
        ids = {e["event_id"] for e in events}
        # every check-in reached its member's partition (both workers own some)
        await collect(
            bootstrap, "member-events", lambda e: e["event_id"] in ids, count=len(ids), timeout=30
        )
        return ids

    before = await fire_round("before")
    fired = await collect(
        bootstrap,
        "actions",
        lambda a: a["event_id"] in before and a["trigger_id"] == tid,
        count=len(members),
        timeout=30,
    )
    assert len(fired) == len(members)

    status, body = http(worker.web_port, "POST", f"/triggers/{tid}/pause", token=k["editor"])
    assert status == 200 and body["status"] == "paused"
    paused_at = time.monotonic()
    for p in ports:
        await until(
            lambda p=p: http(p, "GET", f"/triggers/{tid}")[1].get("status") == "paused",
            5,
            f"not paused on :{p}",
        )
    assert time.monotonic() - paused_at < 1.5
    during = await fire_round("paused")
    quiet = await collect(
        bootstrap,
        "actions",
        lambda a: a["event_id"] in during and a["trigger_id"] == tid,
        count=1,
        timeout=5,
    )
    assert quiet == []  # no worker fired a paused trigger

    status, body = http(
        second_worker.web_port, "POST", f"/triggers/{tid}/resume", token=k["editor"]
    )
    assert status == 200 and body["status"] == "live"
    for p in ports:
        await until(
            lambda p=p: http(p, "GET", f"/triggers/{tid}")[1].get("status") == "live", 5, "live"
        )
    after = await fire_round("resumed")
    again = await collect(
        bootstrap,
        "actions",
        lambda a: a["event_id"] in after and a["trigger_id"] == tid,
        count=len(members),
        timeout=30,
    )
    assert len(again) == len(members)


async def test_two_changes_from_the_same_version_on_two_workers_one_wins(
    worker, second_worker, worker_env
):
    """Two editors publish from v1 at the same moment, one on each worker: one gets v2, the
    other a 409 and reloads; neither overwrites the other. A pause and a publish from the same
    record: the same."""
    tag, k, ports = await two_workers_with_keys(worker, second_worker, worker_env)
    tid = f"race-{tag}"
    await publish_trigger(worker.web_port, push_trigger(tid), *ports)

    def publish(port: int, template: str) -> tuple[int, Any]:
        doc = push_trigger(tid, then=[{"type": "message", "channel": "push", "template": template}])
        body = {"definition": doc, "expected_version": 1, "note": template}
        return http(port, "POST", "/triggers", body, token=k["editor"])

    answers = await asyncio.gather(
        asyncio.to_thread(publish, ports[0], "from A"), asyncio.to_thread(publish, ports[1], "B")
    )
    assert sorted(status for status, _ in answers) == [202, 409], answers
    (conflict,) = [body for status, body in answers if status == 409]
    assert "reload" in conflict["error"], conflict
    (won,) = [body for status, body in answers if status == 202]
    assert won["version"] == 2
    for p in ports:
        await until(
            lambda p=p: http(p, "GET", f"/triggers/{tid}")[1].get("version") == 2, 5, "no v2"
        )
    _, history = http(ports[1], "GET", f"/triggers/{tid}/versions", token=k["viewer"])
    assert [v["version"] for v in history["versions"]] == [1, 2], history
    assert history["versions"][1]["note"] == won["note"]

    def pause(port: int) -> tuple[int, Any]:
        return http(port, "POST", f"/triggers/{tid}/pause", token=k["editor"])

    def publish_v3(port: int) -> tuple[int, Any]:
        doc = push_trigger(tid, then=[{"type": "message", "channel": "push", "template": "v3"}])
        return http(port, "POST", "/triggers", {"definition": doc}, token=k["editor"])

    answers = await asyncio.gather(
        asyncio.to_thread(pause, ports[0]), asyncio.to_thread(publish_v3, ports[1])
    )
    assert sorted(status for status, _ in answers) in ([200, 409], [202, 409]), answers
    await asyncio.sleep(1.0)
    views = [
        {k: http(p, "GET", f"/triggers/{tid}")[1].get(k) for k in ("version", "status")}
        for p in ports
    ]
    assert views[0] == views[1], views
    winner = "paused" if answers[0][0] == 200 else "live"
    assert views[0]["status"] == winner, (views, answers)
    draft = f"{tid}-draft"
    for _ in range(2):  # a deleted draft's id is free again at once
        body = {"definition": push_trigger(draft), "status": "draft"}
        status, answer = http(ports[0], "POST", "/triggers", body, token=k["editor"])
        assert status == 202, answer
        status, answer = http(ports[0], "DELETE", f"/triggers/{draft}", token=k["editor"])
        assert status == 200 and answer["deleted"], answer


def test_the_cli_manages_keys_and_shows_versions(worker, worker_env, tmp_path: Path):
    env = {**worker_env, "STOREPULSE_API_KEYS_FILE": str(tmp_path / "keys.yaml")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(env, *args, timeout=60)

    made = cli("keys", "add", "dana", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().split(": ", 1)[1]
    assert key not in (tmp_path / "keys.yaml").read_text()
    assert cli("keys", "list").stdout.strip() == "dana\tviewer"
    assert cli("keys", "revoke", "dana").returncode == 0
    assert cli("keys", "revoke", "dana").returncode == 1
    env["STOREPULSE_API_URL"] = f"http://127.0.0.1:{worker.web_port}"
    missing = cli("triggers", "versions", "no-such-trigger")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


async def test_decision_history_says_why_a_member_did_not_get_it(worker, send, bootstrap):
    """ "Why didn't member X get the welcome push yesterday?": the second check-in was within
    the trigger's cooldown, and the member's history says so."""
    tag = uuid.uuid4().hex[:6]
    tid = f"why-{tag}"
    doc = push_trigger(tid, guardrails={"quiet_hours": None, "cooldown": "1d"})
    await publish_trigger(worker.web_port, doc)
    (member,) = await consenting(send, bootstrap, 1)
    started = int(time.time() * 1000)
    events = [ev("checkin", store_id=FAST, member_id=member, test=tid) for _ in range(2)]
    for e in events:
        await send("checkins", e, key=member.encode())
        await collect(bootstrap, "member-events", lambda x, e=e: x["event_id"] == e["event_id"])

    def answer() -> list[dict[str, Any]]:
        status, body = http(
            worker.web_port, "GET", f"/members/{member}/decisions?trigger={tid}&since={started}"
        )
        return list(body.get("decisions", [])) if status == 200 else []

    await until(lambda: len(answer()) >= 2, 15, "the decisions were not kept")
    newest, oldest = answer()[:2]
    assert (oldest["verdict"], newest["verdict"], newest["reason"]) == (
        "fired",
        "suppressed",
        "cooldown",
    )
    assert newest["event"] == "checkin" and newest["at"] >= started
    status, body = http(worker.web_port, "GET", f"/members/{member}/decisions?since=yesterday")
    assert status == 400 and "ISO" in body["errors"][0]


async def test_a_backtest_fires_what_the_live_worker_fired(worker, worker_env, send, bootstrap):
    """The same recorded events through the same pipeline: the drafts' report equals what the
    live worker did (fires, members, suppressions), and nothing is written."""
    tag = uuid.uuid4().hex[:6]
    k = keys(worker_env, tag)
    await wait_key(worker.web_port, k["editor"])
    tid = f"back-{tag}"
    doc = push_trigger(tid, guardrails={"quiet_hours": None, "cooldown": "1d"})
    started = int(time.time() * 1000) - 1000
    await publish_trigger(worker.web_port, doc)
    members = await consenting(send, bootstrap, 4)
    stranger = f"m-noconsent-{tag}"  # no profile: no consent to push
    sent = []
    for m in [*members, stranger]:
        for _ in range(2):  # the second within the cooldown
            e = ev("checkin", store_id=FAST, member_id=m, test=tid)
            await send("checkins", e, key=m.encode())
            sent.append(e["event_id"])
    await collect(
        bootstrap, "member-events", lambda e: e["event_id"] in sent, count=len(sent), timeout=30
    )
    live = await collect(
        bootstrap, "actions", lambda a: a["trigger_id"] == tid, count=len(members), timeout=30
    )
    assert len(live) == len(members)
    actions_before = len(await collect(bootstrap, "actions", lambda a: True, timeout=2))

    status, body = http(
        worker.web_port,
        "POST",
        "/triggers/backtest",
        {"definitions": [doc], "from": started, "mode": "instead"},
        token=k["editor"],
        timeout=120,  # a child process replays member-events from the test's start
    )
    assert status == 200, body
    report = body["triggers"][tid]
    assert report["fires"] == len(live) and report["members"] == len(members)
    assert report["suppressed"] == {"cooldown": len(members), "consent": 2}
    assert report["messages_by_channel"] == {"push": len(members)}
    assert sum(report["fires_by_store"].values()) == len(live)
    assert "before the window" in body["cannot_know"]
    assert body["run"]["events_per_s"] > 0
    # The CLI, its partitions folded in two processes (a large window's way): the same report.
    split = await asyncio.to_thread(
        run_cli,
        {
            **worker_env,
            "STOREPULSE_BACKTEST_PARALLEL_FROM": "1",
            "STOREPULSE_BACKTEST_PROCESSES": "2",
        },
        *("triggers", "backtest", "-", "--from", str(started), "--instead", "--json"),
        stdin=orjson.dumps([doc]).decode(),
    )
    assert split.returncode == 0, split.stderr[-2000:]
    apart = orjson.loads(split.stdout)
    assert apart["run"]["processes"] == 2, apart["run"]
    assert apart["triggers"][tid] == report
    assert apart["window"]["members"] == body["window"]["members"]
    await asyncio.sleep(1.0)
    assert len(await collect(bootstrap, "actions", lambda a: True, timeout=2)) == actions_before
    status, body = http(
        worker.web_port, "POST", "/triggers/backtest", {"definitions": [doc]}, token=k["viewer"]
    )
    assert status == 403
    bad = {**doc, "if": "member.tierr == 'gold'"}
    status, body = http(
        worker.web_port, "POST", "/triggers/backtest", {"definitions": [bad]}, token=k["editor"]
    )
    assert status == 422 and "tierr" in body["errors"][0]


async def test_a_push_in_quiet_hours_is_delivered_when_they_end(worker, receiver, send, bootstrap):
    """Quiet hours that end within the minute: the check-in's push is held, not dropped, and
    reaches the receiver once they are over."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    shanghai = ZoneInfo("Asia/Shanghai")
    if datetime.now(shanghai).second > 40:  # leave the check-in time to land inside the window
        await asyncio.sleep(61 - datetime.now(shanghai).second)
    local = datetime.now(shanghai).replace(second=0, microsecond=0)
    ends = local + timedelta(minutes=1)
    window = f"{local:%H:%M}-{ends:%H:%M}"
    tid = f"quiet-{uuid.uuid4().hex[:6]}"
    doc = push_trigger(tid, guardrails={"quiet_hours": window, "max_event_age": "10m"})
    await publish_trigger(worker.web_port, doc)
    (member,) = await consenting(send, bootstrap, 1)
    e = ev("checkin", store_id=FAST, member_id=member, test=tid)
    await send("checkins", e, key=member.encode())

    def history() -> list[dict[str, Any]]:
        status, body = http(worker.web_port, "GET", f"/members/{member}/decisions?trigger={tid}")
        return list(body.get("decisions", [])) if status == 200 else []

    await until(lambda: bool(history()), 15, "no decision")
    assert history()[0]["reason"] == "held_quiet_hours"
    assert not [a for a, b in receiver.bodies.items() if b["trigger_id"] == tid]  # not yet
    deadline = ends.timestamp() + 30
    while not [a for a, b in receiver.bodies.items() if b["trigger_id"] == tid]:
        assert time.time() < deadline, "the held push was never delivered"
        await asyncio.sleep(0.5)
    (action_id,) = [a for a, b in receiver.bodies.items() if b["trigger_id"] == tid]
    assert receiver.first_at[action_id] >= ends.timestamp() - 0.5
