"""The benchmark's bulk loader leaves what registration through the pipeline leaves.

A 1,000,000-member benchmark is only feasible with members loaded straight into Redis and the
member-state changelog (bench/bulk_load.py); its figures mean something only if a worker then
sees those members exactly as if they had registered.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from bench.bulk_load import bulk_load, registration_records
from contracts.topic_configs import topic_configs
from core.settings import Settings
from infra.kafka_admin import create_topics
from infra.worker_process import WorkerProcess
from tests.integration.conftest import get_member, print_tail

MEMBERS = 3  # m-0000000 (gold), m-0000001, m-0000002 bulk-loaded; m-0000003 registers


@pytest.fixture(scope="module")
def bulk_env(worker_env: dict[str, str]) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {
        **worker_env,
        "STOREPULSE_TOPIC_PREFIX": f"bulk{tag}-",
        "STOREPULSE_APP_ID": f"bulk-{tag}",
        "STOREPULSE_REDIS_PREFIX": f"bulk-{tag}",
        "STOREPULSE_TRIGGERS_PATH": "",
        "STOREPULSE_STALL_AFTER_S": "5",
    }


@pytest.fixture(scope="module")
def bulk_worker(bulk_env, tmp_path_factory) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(env=bulk_env, workdir=tmp_path_factory.mktemp("bulk"), name="bulk")
    yield proc
    proc.stop()
    print_tail(proc.log, 60)


def wait_for(port: int, member: str, ready, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        status, body = get_member(port, member)
        if status == 200 and ready(body["member"]):
            return body["member"]
        time.sleep(0.3)
    raise AssertionError(f"{member}: {body}")


def comparable(record: dict, member: str) -> dict:
    """The record without the member's own id and the ring of recent event ids."""
    text = orjson.dumps({k: v for k, v in record.items() if k not in ("_recent", "_recent_out")})
    return orjson.loads(text.replace(member.encode(), b"M"))


async def test_bulk_loaded_members_equal_registered_ones_and_resolve(bulk_env, bulk_worker):
    prefix = bulk_env["STOREPULSE_TOPIC_PREFIX"]
    bootstrap = bulk_env["KAFKA_BOOTSTRAP"]
    settings = Settings.from_env(bulk_env)
    await create_topics(bootstrap, topic_configs(prefix), settings.partitions)
    ts = int(time.time() * 1000) - 60_000
    await bulk_load(settings, MEMBERS, progress=False, ts=ts)

    # One more member registers the slow way: the bench's own registration records.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, key, value in registration_records(3, ts):
            await producer.send_and_wait(prefix + topic, value, key=key)
        bulk_worker.start()
        port = bulk_worker.web_port
        registered = wait_for(port, "m-0000003", lambda m: m.get("tier") == "pink")
        loaded = wait_for(port, "m-0000001", lambda m: True)
        assert comparable(loaded, "m-0000001") == comparable(registered, "m-0000003")
        assert wait_for(port, "m-0000000", lambda m: True)["tier"] == "gold"

        # Devices resolve through the bulk-loaded bindings: a check-in by app device lands on
        # the member restored from the changelog.
        checkin = {
            "event_id": uuid.uuid4().hex,
            "ts": int(time.time() * 1000),
            "kind": "checkin",
            "store_id": "sh-jingan",
            "app_device_id": "dev-0000002",
        }
        await producer.send_and_wait(prefix + "checkins", orjson.dumps(checkin), key=b"2")
    finally:
        await producer.stop()
    member = wait_for(port, "m-0000002", lambda m: m.get("visits", 0) >= 1)
    assert member["visits"] == 1 and member["consent"]["push"] is True
    # No assertion on storepulse_stall_repairs_total: faust sometimes skips records fetched at
    # a worker's start, and gap_guard then has the watch re-read them (counted as a repair);
    # what this test guards is that every waiting record ends up applied.
