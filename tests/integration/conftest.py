"""Real Kafka and redis-server for the whole session, plus one StorePulse worker process.

Nothing here skips: if the broker or Redis cannot start, every integration test errors.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.local import LocalInfra
from infra.worker_process import WorkerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalInfra]:
    local = LocalInfra(workdir=tmp_path_factory.mktemp("infra"), keep_workdir=True)
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="session")
def worker(infra: LocalInfra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(env=infra.env(), workdir=tmp_path_factory.mktemp("worker"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print_tail(proc.log)


def print_tail(log: Path, lines: int = 30) -> None:
    if os.environ.get("CI") and log.exists():
        print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))


@pytest_asyncio.fixture(scope="session")
async def producer(infra: LocalInfra) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, acks="all", linger_ms=1)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
def send(producer: AIOKafkaProducer) -> Callable[..., Any]:
    async def _send(topic: str, value: dict[str, Any] | bytes, key: bytes | None = None) -> None:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        await producer.send_and_wait(topic, raw, key=key)

    return _send


async def collect(
    bootstrap: str,
    topic: str,
    match: Callable[[dict[str, Any]], bool],
    *,
    count: int = 1,
    timeout: float = 10.0,
    settle: float = 0.0,
) -> list[dict[str, Any]]:
    """Read `topic` from the start until `count` records match (then `settle` more seconds)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for rec in records:
                    data = orjson.loads(rec.value)
                    if match(data):
                        found.append(data)
            if len(found) >= count and settle_until is None:
                settle_until = time.monotonic() + settle
    finally:
        await consumer.stop()
    return found


@pytest.fixture
def bootstrap(infra: LocalInfra) -> str:
    return infra.bootstrap
