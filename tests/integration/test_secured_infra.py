"""A worker on a Kafka that demands SASL SCRAM-SHA-512 and a Redis with an ACL user and no
default user: the whole path works with credentials, and nothing gets in without them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from contracts.batches import unpack
from infra.kafka_broker import KafkaBroker
from infra.redis_server import RedisServer
from infra.worker_process import WorkerProcess, health
from tests.integration.conftest import WORKER_ENV
from tests.integration.test_ingestion import ev, uid

USER, PASSWORD = "storepulse", "scram-test-password-1"
SASL = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": USER,
    "sasl_plain_password": PASSWORD,
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KafkaBroker, RedisServer]]:
    folder = tmp_path_factory.mktemp("secured")
    kafka = KafkaBroker(folder / "kafka", scram=(USER, PASSWORD))
    cache = RedisServer(folder / "redis", acl_user=("sp-worker", "redis-acl-password"))
    try:
        kafka.start()
        cache.start()
        yield kafka, cache
    finally:
        kafka.stop()
        cache.stop()


async def test_worker_runs_on_scram_kafka_and_acl_redis(secured, tmp_path: Path):
    kafka, cache = secured
    with pytest.raises(redis.AuthenticationError):  # no default user
        redis.Redis(port=cache.port).get("anything")
    anonymous = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, request_timeout_ms=3000)
    with pytest.raises((KafkaError, OSError, asyncio.TimeoutError)):
        await asyncio.wait_for(anonymous.start(), 10)
    await anonymous.stop()
    wrong = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, **{**SASL, "sasl_plain_password": "x"}
    )
    with pytest.raises((KafkaError, OSError)):
        await asyncio.wait_for(wrong.start(), 10)
    await wrong.stop()

    worker = WorkerProcess(
        env={
            **WORKER_ENV,
            "KAFKA_BOOTSTRAP": kafka.bootstrap,
            "REDIS_URL": cache.url,
            "STOREPULSE_PARTITIONS": "4",
            "STOREPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STOREPULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "STOREPULSE_KAFKA_SASL_USERNAME": USER,
            "STOREPULSE_KAFKA_SASL_PASSWORD": PASSWORD,
        },
        workdir=tmp_path,
        name="secured-worker",
    )
    worker.start(timeout=120)
    # /health knows Redis from the start (through the ACL user), before any event needed it
    assert (health(worker.web_port, WORKER_ENV["STOREPULSE_API_TOKEN"]) or {}).get("redis") == "up"
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, **SASL)
    await producer.start()
    try:
        member = uid("m")
        profile = ev("profile", member_id=member, consent={"push": True})
        await producer.send_and_wait("members", orjson.dumps(profile), key=member.encode())
        checkin = ev("checkin", store_id="sh-jingan", member_id=member)
        await producer.send_and_wait("checkins", orjson.dumps(checkin), key=member.encode())
        consumer = AIOKafkaConsumer(
            "member-events",
            bootstrap_servers=kafka.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            **SASL,
        )
        await consumer.start()
        seen = False
        deadline = time.monotonic() + 30
        try:
            while not seen and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen |= any(
                        e["event_id"] == checkin["event_id"]
                        for r in records
                        for e in unpack(r.value)
                    )
        finally:
            await consumer.stop()
        assert seen, "the check-in never reached member-events through the SASL worker"
        # the edge de-duplicated it through the ACL user's Redis connection
        client = redis.Redis.from_url(cache.url)
        assert any(b"dedup" in k or b"seen" in k for k in client.scan_iter(count=1000))
    finally:
        await producer.stop()
        worker.stop()
