"""Runs `storepulse worker` as a child process and waits until it owns partitions."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from core.settings import ROOT
from infra.process import free_port, spawn, stop_group, wait_until


def metrics(port: int) -> dict[str, float]:
    """A worker's /metrics as sample name -> value summed over labels (raises OSError if down)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def partitions(port: int, token: str, timeout: float = 10.0) -> list[dict[str, object]]:
    """A worker's `/health?partitions=1`: every assigned stream partition as faust and aiokafka
    see it (raises OSError or ValueError when the worker cannot answer in time)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/health?partitions=1",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())["partitions"]


def health(port: int, token: str = "") -> dict[str, object] | None:
    """`/health`: `status` and `ready` only, unless `token` is the worker's API key."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/health",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


@dataclass
class WorkerProcess:
    env: dict[str, str]
    workdir: Path
    name: str = "worker"
    web_port: int = 0
    pid: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 90.0) -> None:
        self.web_port = self.web_port or free_port()
        env = {
            **os.environ,
            **self.env,
            **self.extra_env,
            "STOREPULSE_WEB_PORT": str(self.web_port),
            "STOREPULSE_DATA_DIR": str(self.workdir / f"{self.name}-data"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        proc = spawn(
            [sys.executable, "-c", "import cli; cli.main()", "worker"],
            log=self.log,
            env=env,
            cwd=ROOT,
        )
        self.pid = proc.pid
        wait_until(
            self.ready, timeout=timeout, what=f"StorePulse {self.name}", proc=proc, log=self.log
        )

    def ready(self) -> bool:
        state = health(self.web_port)
        return bool(state and state.get("ready"))

    def stop(self, grace: float = 30.0) -> None:
        if self.pid is not None:
            stop_group(self.pid, grace=grace)
            self.pid = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown, no final commit."""
        self.stop(grace=0.0)
