"""The benchmark runs end to end on a tiny load and reports every figure it promises."""

from __future__ import annotations

import subprocess
import sys

from core.settings import ROOT


def test_bench_smoke_reports_throughput_latency_memory_and_state():
    result = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--smoke",
            "--members",
            "300",
            "--events",
            "1500",
            "--latency-seconds",
            "3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("config |"))
    row = dict(zip(lines[header].split(" | "), lines[header + 1].split(" | "), strict=True))
    assert float(row["events/s"]) > 0 and float(row["raw/s"]) > float(row["events/s"])
    assert 0 < float(row["ratio"]) < 1
    assert float(row["p50 ms"]) <= float(row["p99 ms"])  # nan would fail here: none measured
    assert float(row["RSS MB"]) > 20 and float(row["state B/member"]) > 0
    assert float(row["faust pass-through/s"]) > 0  # faust's own ceiling, measured in the same run
    assert float(row["faust consume/s"]) > 0  # and faust's rate of merely handing records over
    # what an event costs: worker CPU, and the Kafka records written for it by topic
    cost = next(line for line in lines if " us of worker CPU per event in the backlog" in line)
    assert float(cost.split(": ", 1)[1].split(" us ")[0]) > 0
    assert float(cost.split("backlog, ", 1)[1].split(" at half load")[0]) > 0
    listed = cost.split("input excluded (", 1)[1].split("); faust consume-only", 1)[0]
    written = dict((topic, float(n)) for topic, n in (p.rsplit(" ", 1) for p in listed.split(", ")))
    assert not {"checkins", "beacons", "pos"} & set(written)  # the load's own records are not ours
    # batches on every hop: ingest forwards one record per member-events partition per batch
    assert 0 < written["member-events"] < 0.9
    assert any(t.endswith("member-state-changelog") and n > 0.3 for t, n in written.items())
    assert "faust consume-only" in cost and "StorePulse at" in cost
    assert "in 3 consecutive latency runs" in cost  # the worst of three is the p99 reported
