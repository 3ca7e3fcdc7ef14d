"""Kafka + Redis for a local run: started on free ports, or taken from KAFKA_BOOTSTRAP/REDIS_URL."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from infra.kafka_broker import KafkaBroker
from infra.redis_server import RedisServer


@dataclass
class LocalInfra:
    """Context manager; on exit it stops exactly what it started and removes its temp files."""

    partitions: int = 4
    workdir: Path | None = None
    keep_workdir: bool = False
    # an append-only file fsynced every second (as production runs): a restart keeps every key
    persistent_redis: bool = True
    kafka: KafkaBroker | None = None
    redis: RedisServer | None = None
    bootstrap: str = ""
    redis_url: str = ""
    _tmp: str | None = field(default=None, repr=False)

    def start(self) -> LocalInfra:
        if self.workdir is None:
            self._tmp = tempfile.mkdtemp(prefix="storepulse-")
            self.workdir = Path(self._tmp)
        try:
            self.bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
            if not self.bootstrap:
                self.kafka = KafkaBroker(self.workdir / "kafka", partitions=self.partitions)
                self.bootstrap = self.kafka.start()
            self.redis_url = os.environ.get("REDIS_URL", "")
            if not self.redis_url:
                self.redis = RedisServer(self.workdir / "redis", persistent=self.persistent_redis)
                self.redis_url = self.redis.start()
        except BaseException:
            self.stop()
            raise
        return self

    def env(self) -> dict[str, str]:
        """Variables a worker, the simulator or a test needs to reach this infrastructure."""
        return {
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "REDIS_URL": self.redis_url,
            "STOREPULSE_PARTITIONS": str(self.partitions),
        }

    def stop(self) -> None:
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self._tmp and not self.keep_workdir:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> LocalInfra:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
