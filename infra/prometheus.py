"""Debian's Prometheus server and promtool, installed when missing, run on a free loopback port.

Used by the tests that check the alert rules (`promtool check rules`, `promtool test rules`) and
that every dashboard and alert expression parses in a real server scraping a live worker.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.process import (
    InfraError,
    apt_install,
    free_port,
    port_open,
    spawn,
    stop_group,
    wait_until,
)


def ensure_prometheus() -> tuple[str, str]:
    """Paths of `prometheus` and `promtool`; installs Debian's package when missing and we may."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if all(found):
        return found[0] or "", found[1] or ""
    apt_install(
        ["prometheus"],
        "prometheus / promtool not found: run `sudo apt-get install -y prometheus` "
        "(Debian's package brings both)",
    )
    # the package starts a system service on :9090; ours uses its own port, so that one may stay
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prometheus or not promtool:
        raise InfraError("prometheus is still missing after apt-get install")
    return prometheus, promtool


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    _, tool = ensure_prometheus()
    return subprocess.run([tool, *args], capture_output=True, text=True, check=False, timeout=120)


@dataclass
class PrometheusServer:
    """A throw-away server scraping `targets` (host:port of workers) every second."""

    workdir: Path
    targets: list[str]
    rules: list[Path] | None = None
    port: int = 0
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        binary, _ = ensure_prometheus()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in self.rules or []],
            "scrape_configs": [
                {
                    "job_name": "storepulse",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        (self.workdir / "prometheus.yml").write_text(json.dumps(config))
        log = self.workdir / "prometheus.log"
        proc = spawn(
            [
                binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            log=log,
        )
        self.pid = proc.pid
        try:
            # ready, not just listening: until its storage is open the API answers 503 (a
            # fresh-clone CI run failed on that plain-text answer)
            wait_until(self._ready, timeout=timeout, what="prometheus", proc=proc, log=log)
        except InfraError:
            self.stop()
            raise
        return self.url

    def _ready(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>: the `data` of a success, or InfraError with Prometheus's error."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                body = json.loads(text or b"{}")
            except json.JSONDecodeError:
                raise InfraError(f"{path} {params}: HTTP {exc.code}: {text[:200]!r}") from None
        if body.get("status") != "success":
            raise InfraError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def stop(self) -> None:
        if self.pid is not None:
            stop_group(self.pid, grace=10.0)
            self.pid = None
