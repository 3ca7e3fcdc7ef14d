"""History import on a live worker, real Kafka and Redis: a few thousand rows of real-shaped
retail data (identity links, CRM profiles, a year and more of sales with refunds) land in
member state as an independent computation from the same rows says, fire no trigger, and a
second import of the same file changes nothing."""

from __future__ import annotations

import asyncio
import csv
import random
import subprocess
import time
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiokafka import AIOKafkaProducer

from state.purchases import rfm
from tests.integration.conftest import collect, http, publish_trigger, run_cli

TZ = ZoneInfo("Asia/Shanghai")
DAY = 86_400_000
STORES = ["test-history-a", "test-history-b"]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, *args, timeout=300)


def shop(tag: str, members: int, now: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Sales rows and, per member, what they must add up to (counted here, independently)."""
    rng = random.Random(7)
    rows: list[dict[str, Any]] = []
    expected: dict[str, Any] = {}
    today = datetime.fromtimestamp(now / 1000, TZ).date()
    for m in range(members):
        member = f"{tag}-m{m:04d}"
        # about 12 sales a member, a few more than a year ago (they count for visits and points,
        # not for the 365 days); never two a day, never near the 365-day month boundary
        days = sorted(rng.sample(range(1, 300), 10) + rng.sample(range(420, 450), 2))
        sales = []
        for n, ago in enumerate(days):
            ts = now - ago * DAY + rng.randrange(0, 3_600_000)
            total = round(rng.uniform(20, 700), 2)
            receipt = f"{tag}-r{m}-{n}"
            by_card = m % 2 == 0
            row = {
                "ts": datetime.fromtimestamp(ts / 1000, TZ).isoformat(),
                "kind": "sale",
                "store_id": STORES[n % 2],
                "receipt_id": receipt,
                "total": total,
                "items": orjson.dumps(
                    [{"sku": f"sku-{n}", "category": "food", "qty": 1, "price": total}]
                ).decode(),
                **({"member_card": f"{tag}-card{m}"} if by_card else {"member_id": member}),
            }
            rows.append(row)
            refunded = n == 3  # one sale of each member comes back the same visit
            if refunded:
                rows.append(
                    {
                        **row,
                        "ts": datetime.fromtimestamp((ts + 600_000) / 1000, TZ).isoformat(),
                        "kind": "refund",
                        "receipt_id": f"{receipt}-back",
                        "original_receipt_id": receipt,
                        "items": "",
                    }
                )
            else:
                sales.append((datetime.fromtimestamp(ts / 1000, TZ).date(), total))

        def window(days_back: int, kept: list[tuple[Any, float]] = sales) -> tuple[int, float]:
            inside = [t for d, t in kept if d >= today - timedelta(days=days_back - 1)]
            return len(inside), round(sum(inside), 2)

        expected[member] = {
            "visits": len(days),
            "points": sum(int(t) for _, t in sales),
            "f30m30": window(30),
            "f90m90": window(90),
            "f365m365": window(365),
        }
    return rows, expected


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    names = sorted({k for r in rows for k in r})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def pos_duplicates(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith('storepulse_duplicates_dropped_total{topic="pos"}'):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_history_import_matches_an_independent_count_fires_nothing_and_is_idempotent(
    worker, worker_env, bootstrap, tmp_path: Path
):
    tag = f"h{uuid.uuid4().hex[:6]}"
    tid = f"history-{tag}"
    await publish_trigger(
        worker.web_port,
        {
            "id": tid,
            "name": tid,
            "stores": STORES,
            "when": {"event": "purchase"},
            "then": [{"type": "tag", "add": [tid]}],
            "guardrails": {"quiet_hours": None, "max_event_age": "1000d"},
        },
    )
    now = int(time.time() * 1000)
    members = 250
    rows, expected = shop(tag, members, now)
    identity = tmp_path / "identity.jsonl"
    identity.write_bytes(
        b"\n".join(
            orjson.dumps(
                {
                    "ts": now - 500 * DAY,
                    "member_id": f"{tag}-m{m:04d}",
                    "member_card": f"{tag}-card{m}",
                }
            )
            for m in range(members)
        )
    )
    profiles = tmp_path / "members.csv"
    write_csv(
        profiles,
        [
            {
                "ts": now - 400 * DAY,
                "member_id": f"{tag}-m{m:04d}",
                "first_name": f"N{m}",
                "consent": '{"push": true}',
            }
            for m in range(members)
        ],
    )
    bad = [
        {**rows[0], "receipt_id": f"{tag}-bad1", "store_id": "nowhere"},
        {**rows[0], "receipt_id": f"{tag}-bad2", "total": "-5"},
        {**rows[0], "receipt_id": f"{tag}-bad3", "currency": "XYZ"},
    ]
    pos = tmp_path / "pos.csv"
    write_csv(pos, rows + bad)

    done = cli(worker_env, "import", "identity", str(identity))
    assert done.returncode == 0, done.stderr
    assert f"{members} rows read, {members} sent, 0 rejected" in done.stdout, done.stdout
    await collect(
        bootstrap,
        "member-events",
        lambda e: e["type"] == "identity" and e["member_id"].startswith(tag),
        count=members,
        timeout=60,
    )
    done = cli(worker_env, "import", "members", str(profiles))
    assert done.returncode == 0 and f"{members} sent" in done.stdout, done.stdout + done.stderr
    # sorted in runs of 500 rows on disk and merged, as a file too large for memory would be
    done = cli({**worker_env, "STOREPULSE_IMPORT_SORT_ROWS": "500"}, "import", "pos", str(pos))
    assert done.returncode == 0, done.stderr
    assert f"{len(rows) + 3} rows read, {len(rows)} sent, 3 rejected" in done.stdout, done.stdout
    rejected = [
        orjson.loads(line)
        for line in (tmp_path / "pos.csv.rejected.jsonl").read_bytes().splitlines()
    ]
    assert sorted(r["reason"] for r in rejected) == ["currency", "schema", "unknown_store"]
    assert f"{len(rows)}/{len(rows)} rows" in done.stderr  # the progress bar

    async def records() -> dict[str, Any]:
        out = {}
        for member in expected:
            status, body = http(worker.web_port, "GET", f"/members/{member}")
            out[member] = body.get("member") if status == 200 else None
        return out

    def figures(record: dict[str, Any] | None) -> dict[str, Any] | None:
        if record is None:
            return None
        r = rfm(record, now, TZ)
        return {
            "visits": record["visits"],
            "points": record["points"],
            "f30m30": (r["f30"], r["m30"]),
            "f90m90": (r["f90"], r["m90"]),
            "f365m365": (r["f365"], r["m365"]),
        }

    deadline = time.monotonic() + 120
    while True:
        got = {m: figures(r) for m, r in (await records()).items()}
        wrong = {m: (got[m], want) for m, want in expected.items() if got[m] != want}
        if not wrong:
            break
        assert time.monotonic() < deadline, (
            f"{len(wrong)} members differ, e.g. {list(wrong.items())[:2]}"
        )
        await asyncio.sleep(2)
    state = await records()
    assert all(
        r["first_name"].startswith("N") and r["consent"] == {"push": True} for r in state.values()
    )
    assert not any(tid in (r.get("tags") or []) for r in state.values())  # no trigger fired
    actions = await collect(
        bootstrap, "actions", lambda a: a["member_id"].startswith(tag), timeout=3
    )
    assert actions == []

    # the same file again: every row is recognised at the edge, nothing changes
    before = pos_duplicates(worker.web_port)
    again = cli(worker_env, "import", "pos", str(pos))
    assert again.returncode == 0 and f"{len(rows)} sent" in again.stdout, again.stdout
    deadline = time.monotonic() + 60
    while pos_duplicates(worker.web_port) - before < len(rows):
        assert time.monotonic() < deadline, "the second import was not recognised"
        await asyncio.sleep(1)
    assert {m: figures(r) for m, r in (await records()).items()} == expected

    # and live events still work next to history: a sale now fires the trigger
    live: dict[str, Any] = {
        "event_id": f"{tag}-live",
        "ts": int(time.time() * 1000),
        "kind": "sale",
        "store_id": STORES[0],
        "receipt_id": f"{tag}-live",
        "total": 10.0,
        "member_id": f"{tag}-m0001",
    }
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("pos", orjson.dumps(live), key=live["member_id"].encode())
    finally:
        await producer.stop()
    # (the sample `welcome-back-30d` may fire too: the member's last imported visit can be
    # more than 30 days ago, and its coupon can share the actions record with this one)
    (fired,) = await collect(
        bootstrap,
        "actions",
        lambda a: a["member_id"] == live["member_id"] and a["trigger_id"] == tid,
        timeout=20,
    )
    assert fired["event_id"] == live["event_id"]
