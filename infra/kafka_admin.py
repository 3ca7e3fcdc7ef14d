"""Creates StorePulse's topics with the configured partition counts before any worker starts."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from core.settings import KafkaTarget, kafka_options
from infra.process import InfraError


async def create_topics(
    kafka: KafkaTarget,
    names: dict[str, dict[str, str]],
    partitions: int,
    replication: int = 1,
    timeout: float = 30.0,
) -> None:
    """Create missing topics; `names` maps topic -> extra topic configs (e.g. compaction)."""
    options = kafka_options(kafka)
    bootstrap = options["bootstrap_servers"]
    admin = AIOKafkaAdminClient(**options, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except Exception as exc:
        raise InfraError(
            f"cannot reach Kafka at {bootstrap} ({exc!r}): is the broker running? "
            "Start one with `storepulse infra up` or set KAFKA_BOOTSTRAP"
        ) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, replication, topic_configs=configs)
            for name, configs in names.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker won the race
    finally:
        await admin.close()
