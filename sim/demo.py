"""`make demo`: Kafka + Redis + a worker + the simulator + sample triggers, printing each action."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import textwrap
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

from contracts.batches import unpack
from core.settings import ROOT, Settings
from infra.local import LocalInfra
from infra.process import InfraError
from infra.worker_process import WorkerProcess, metrics
from sim.simulator import Simulator
from state.stores import load_stores
from web.keys import ROLES, add_key

WARM_UP_S = 10.0  # a fresh worker's first seconds: faust, RocksDB and Python warming up


@dataclass
class Tally:
    actions: int = 0
    dead_letters: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    warm_up_ms: list[float] = field(default_factory=list)  # actions of the first WARM_UP_S
    started: float = 0.0  # monotonic time the simulator started

    def percentile(self, q: float, warm_up: bool = False) -> float:
        values = self.warm_up_ms if warm_up else self.latencies_ms
        if not values:
            return 0.0
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def record(self, latency: float) -> None:
        self.actions += 1
        warm = time.monotonic() - self.started < WARM_UP_S
        (self.warm_up_ms if warm else self.latencies_ms).append(latency)


def scrape_events_in(port: int) -> int:
    """Input records the worker has consumed (-1 while its /metrics does not answer)."""
    try:
        return int(metrics(port).get("storepulse_events_in_total", 0))
    except OSError:
        return -1


async def watch(bootstrap: str, tally: Tally, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        "deliveries",
        "dead-letter",
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        await consumer.seek_to_end()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for data in (d for rec in records for d in unpack(rec.value)):
                    if tp.topic == "dead-letter":
                        tally.dead_letters += 1
                        message = textwrap.shorten(data["message"], 90, placeholder=" ...")
                        print(
                            f"  dead letter  {data['source_topic']}: {data['reason']}: {message}",
                            flush=True,
                        )
                    elif data["outcome"] == "sent":
                        latency = data["delivered_at"] - data["event_ts"]
                        tally.record(latency)
                        print(
                            f"  action  {data['member_id'][:28]:<28} "
                            f"{data['trigger_id'][:28]:<28} {data['channel'][:7]:<7} "
                            f"{latency:>7,} ms",
                            flush=True,
                        )
    finally:
        await consumer.stop()


async def run_demo(duration: float, rate: float, members: int) -> int:
    workdir = ROOT / ".run" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    infra = LocalInfra(workdir=workdir, keep_workdir=True)
    worker: WorkerProcess | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tally = Tally()
    sim_counts: dict[str, int] = {}
    events_in = 0
    try:
        print("starting Kafka and Redis ...", flush=True)
        await asyncio.to_thread(infra.start)
        print(f"  kafka {infra.bootstrap}  redis {infra.redis_url}", flush=True)
        # named keys, one per role, so the console can be tried as each (web/keys.py)
        keys_file = workdir / "keys.yaml"
        demo_keys = {role: add_key(keys_file, f"demo-{role}", role) for role in ROLES}
        worker = WorkerProcess(
            env=infra.env(), workdir=workdir, extra_env={"STOREPULSE_API_KEYS_FILE": str(keys_file)}
        )
        print("starting a StorePulse worker ...", flush=True)
        await asyncio.to_thread(worker.start)
        print(
            f"  worker ready (http://127.0.0.1:{worker.web_port}/metrics, log {worker.log})",
            flush=True,
        )
        print(
            f"  console: http://127.0.0.1:{worker.web_port}/console, API keys (demo only): "
            + ", ".join(f"{role} {key}" for role, key in demo_keys.items()),
            flush=True,
        )
        watcher = asyncio.create_task(watch(infra.bootstrap, tally, stop))
        await asyncio.sleep(1.0)  # let the watcher take its positions before events flow
        settings = Settings.from_env({**os.environ, **infra.env()})
        sim = Simulator(
            infra.bootstrap,
            list(load_stores(settings.stores_path).values()),
            members=members,
            rate=rate,
            duration=duration,
        )
        print(f"simulating {rate:g} events/s for {duration:g}s ({members} members) ...", flush=True)
        tally.started = time.monotonic()
        sim_counts = dict(await sim.run(stop))
        # Drain: wait until the worker has consumed every event and deliveries went quiet.
        deadline = time.monotonic() + 30
        last_seen = -1
        while time.monotonic() < deadline and not stop.is_set():
            events_in = await asyncio.to_thread(scrape_events_in, worker.web_port)
            if events_in >= sim_counts.get("total", 0) and tally.actions == last_seen:
                break
            last_seen = tally.actions
            await asyncio.sleep(1.5)
        stop.set()
        await watcher
    except InfraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop.set()
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        await asyncio.to_thread(infra.stop)
    print()
    print("summary")
    print(
        f"  produced by the simulator: {sim_counts.get('total', 0)} "
        f"({sim_counts.get('bad', 0)} malformed on purpose)"
    )
    print(
        f"  first {WARM_UP_S:.0f} s (the worker warming up): {len(tally.warm_up_ms)} actions, "
        f"p99 {tally.percentile(0.99, warm_up=True):.0f} ms; the figures below are after it"
    )
    print(f"events in: {events_in}")
    print(f"actions out: {tally.actions}")  # warm-up included
    print(f"dead letters: {tally.dead_letters}")
    print(f"latency p50 ms: {tally.percentile(0.50):.0f}")
    print(f"latency p99 ms: {tally.percentile(0.99):.0f}")
    return 0


def main(duration: float, rate: float, members: int) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(duration, rate, members))
    return 130
