"""Member routes with two workers: whichever worker is asked, the one that owns the member's
partition answers, with the request's body (web/routing.py)."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

from core.settings import Settings
from state.timers import partition_of
from tests.integration.conftest import API_TOKEN, give_consent, http
from tests.integration.test_delivery import FAST, until
from tests.integration.test_ingestion import uid


async def test_every_member_is_found_and_explained_through_either_worker(
    worker, second_worker, worker_env, send, bootstrap
):
    await until(lambda: worker.ready() and second_worker.ready(), 40, "workers never settled")
    settings = Settings.from_env(worker_env)
    members = [uid("m") for _ in range(12)]
    await asyncio.gather(*(give_consent(send, bootstrap, m) for m in members))
    ports = (worker.web_port, second_worker.web_port)
    owners = {
        p: sorted(
            x["partition"]
            for x in http(p, "GET", "/health?partitions=1")[1]["partitions"]
            if x["topic"].endswith("member-events")
        )
        for p in ports
    }
    assert all(owners.values()), owners  # each worker owns some: half the lookups are forwarded

    def answers(m: str) -> list[int]:
        return [http(p, "GET", f"/members/{m}")[0] for p in ports]

    deadline = time.monotonic() + 15  # each member's record written by its own worker
    while True:
        found = {m: (partition_of(m, settings.partitions), answers(m)) for m in members}
        missing = {m: f for m, f in found.items() if f[1] != [200, 200]}
        if not missing or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert not missing, (owners, missing)  # faust's table_route: ~half were 404

    def forged(port: int, m: str, mark: str = "1") -> int:  # a client's own forwarding mark
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/members/{m}",
            headers={"Authorization": f"Bearer {API_TOKEN}", "X-StorePulse-Forwarded": mark},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    # routed like any request (a trusted mark: the worker without the member answered 404)
    assert [[forged(p, m) for p in ports] for m in members] == [[200, 200]] * len(members)
    assert [forged(p, members[0], "\xe9t\xe9") for p in ports] == [200, 200]  # not ASCII

    checkin = {"type": "checkin", "store_id": FAST}
    for m in members[:4]:  # a POST body reaches the owner (faust's router dropped it)
        for p in ports:
            status, body = http(p, "POST", f"/explain/{m}", checkin)
            assert status == 200 and body["member_id"] == m, (p, status, body)
    m = members[0]
    for p in ports:
        status, body = http(p, "PUT", f"/members/{m}/consent/sms", {"granted": False})
        assert status in (200, 202), (p, status, body)
