"""`make chaos` in short: the five faults under a steady stream, judged from what Kafka holds.

`rebalance-kill` also covers the partition watch: in about half the runs faust leaves a joining
worker's partitions unprocessed, and the fault passes only if the watch repairs that in time.

The harness starts its own Kafka and Redis (it restarts them), so it runs as a subprocess and
reports through `bench/chaos.json`-shaped output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.settings import ROOT

# Faults the CI short run has in one input shape only (`make chaos` runs every fault in both):
# the restarts of Redis and the broker touch the batch path's pipelines and large records most.
ONE_SHAPE = {
    "redis-flush": "batch",
    "redis-lost": "single",
    "redis-restart": "batch",
    "broker-restart": "batch",
}


def test_faults_lose_nothing_double_nothing_and_recover_alone(tmp_path: Path):
    out = tmp_path / "chaos.json"
    result = subprocess.run(
        [
            sys.executable,
            "bench/chaos.py",
            "--faults",
            "worker-kill,rebalance-kill,malformed,"  # both shapes; the rest in one (CI time)
            + ",".join(f"{fault}:{shape}" for fault, shape in ONE_SHAPE.items()),
            "--members",
            "150",
            "--rate",
            "100",
            "--seconds",
            "20",
            "--burst",
            "1500",
            "--pairs",
            "2",
            "--downtime",
            "3",
            "--shapes",
            "single,batch",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    faults = {
        "worker-kill",
        "broker-restart",
        "redis-restart",
        "rebalance-kill",
        "malformed",
        "redis-flush",
        "redis-lost",
    }
    # every fault with one event per record and with batch envelopes of events
    assert {(r["fault"], r["shape"]) for r in results} == {
        (f, s) for f in faults for s in ("single", "batch") if f not in ONE_SHAPE
    } | set(ONE_SHAPE.items())
    for r in results:
        fault = r["fault"]
        assert r["events_in"] > 2000, (r, result.stdout[-3000:])  # really produced
        assert r["accounted"] == r["events_in"], (fault, result.stdout[-3000:])
        # A SIGKILL in the instant between a gateway's 200 and the Redis "done" mark makes the next
        # owner send that action again after the claim timeout, with the same Idempotency-Key
        # header (the gateway's dedup key). Seen once in ~10 runs; anything more is a bug.
        killed = fault in ("worker-kill", "rebalance-kill")
        assert r["duplicates_delivered"] <= (1 if killed else 0), (fault, r)
        assert r["missing"] == 0, (fault, result.stdout[-3000:])
        assert r["state_mismatches"] == 0, (fault, result.stdout[-3000:])
        assert r["repeats_sent"] > 0, fault  # duplicates were in the input and were dropped
        # the pool was spent before the fault: a fault that forgot it would issue more
        assert 0 < r["coupons_issued"] and r["coupons_over_budget"] == 0, (fault, r)
        if fault != "malformed":
            assert r["recovery_s"] is not None and r["recovery_s"] < 60, (fault, r)
    for bad in (r for r in results if r["fault"] == "malformed"):
        check_malformed(bad)
    assert result.returncode == 0, result.stdout[-3000:]


def check_malformed(bad: dict) -> None:
    assert bad["dead_lettered"] > 150  # ~10 % of the stream and of the burst, each with a reason
    # Good records flow through a burst that is 10 % malformed. How fast, against a clean burst,
    # is a figure for `make chaos` to print (speed is measured, not asserted, in CI).
    assert bad["notes"]["malformed_10pct_good_per_s"] > 0 and bad["notes"]["clean_good_per_s"] > 0
