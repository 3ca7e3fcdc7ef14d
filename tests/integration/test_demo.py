"""`make demo` as a user runs it: it prints actions and a summary and leaves nothing running."""

from __future__ import annotations

import re
import subprocess
import sys

from core.settings import ROOT


def _running_under(path: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if path in line and "ps -eo" not in line]


def test_demo_prints_actions_and_summary_and_stops_everything():
    result = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", "demo", "--duration", "8", "--rate", "15"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"^  action  m-\d{6}\s+first-checkin-welcome\s+push", out, re.M)
    summary = dict(
        re.findall(
            r"^(events in|actions out|dead letters|latency p50 ms|"
            r"latency p99 ms): (\d+)$",
            out,
            re.M,
        )
    )
    assert list(summary) == [
        "events in",
        "actions out",
        "dead letters",
        "latency p50 ms",
        "latency p99 ms",
    ]
    produced = int(re.search(r"produced by the simulator: (\d+) \((\d+) malformed", out)[1])
    malformed = int(re.search(r"produced by the simulator: \d+ \((\d+) malformed", out)[1])
    assert int(summary["events in"]) == produced
    assert int(summary["dead letters"]) == malformed
    assert int(summary["actions out"]) > 0
    assert int(summary["latency p50 ms"]) <= int(summary["latency p99 ms"]) < 5000
    assert _running_under(str(ROOT / ".run" / "demo")) == []
