"""`make bench`: throughput, latency, memory and state size, side by side with raw aiokafka.

Every configuration runs on the same machine in the same run, on its own topics (a topic
prefix), consumer group and Redis prefix, so nothing one leaves behind helps the next:

1. members are registered (identity links + CRM profile; from 100,000 members on they are
   bulk-loaded into Redis and the member-state changelog instead, bench/bulk_load.py);
2. W workers start with T triggers and process the registrations (untimed);
3. a backlog of a realistic event mix is produced as fast as possible: sustained events/s end
   to end (events over the time from the first produced until every input and member-events
   partition is committed to its end);
4. once every action of the backlog is delivered, events are produced at half that rate for a
   while; event-time -> delivery latency is read from `deliveries` (a bench trigger fires on
   every check-in);
5. worker RSS and on-disk state bytes per member are read at the end;
6. with the workers stopped, a plain aiokafka consumer reads every input record (the ceiling
   for a Python consumer), then faust with an agent that only forwards, and one that does
   nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bulk_load import bulk_load, registration_records  # noqa: E402
from contracts.batches import unpack  # noqa: E402
from infra.kafka_admin import create_topics  # noqa: E402
from infra.local import LocalInfra  # noqa: E402
from infra.process import unwind_on_sigterm  # noqa: E402
from infra.worker_process import WorkerProcess, metrics, partitions  # noqa: E402

INPUTS = ("checkins", "beacons", "wifi", "pos", "identity", "members")


@dataclass
class Result:
    name: str
    workers: int
    triggers: int
    members: int
    events: int
    resolution: bool
    events_per_s: float
    raw_events_per_s: float
    ratio_to_raw: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rss_mb: float
    state_bytes_per_member: float
    faust_passthrough_per_s: float  # faust's own ceiling: consume + parse + produce, no state
    faust_consume_per_s: float  # faust handing records to an agent that does nothing with them
    timer_ticks_during_latency: int = 0  # ticks that competed with the latency probe
    records_per_event: dict[str, float] = field(default_factory=dict)  # Kafka writes, by topic
    cpu_us_per_event: float = 0.0  # worker CPU time (all workers) per backlog event
    # the same during the latency window: a trickle costs more per event than a backlog
    cpu_us_per_event_half_load: float = 0.0
    input_events_per_record: int = 1  # the input shape: 1, or batch envelopes of this many
    p99_runs_ms: list[float] = field(default_factory=list)  # each latency run; p99_ms: the worst


def trigger_docs(count: int) -> list[dict]:
    """One trigger that fires on every check-in (latency probe) and `count - 1` realistic ones
    spread over event types and stores, most of which do not match most events."""
    docs: list[dict[str, Any]] = [
        {
            "id": "bench-probe",
            "name": "probe",
            "when": {"event": "checkin"},
            "then": [{"type": "message", "channel": "log", "template": "hi"}],
            "guardrails": {"quiet_hours": None, "max_event_age": "1h"},
        }
    ]
    events = ["checkin", "visit_started", "zone_entered", "purchase", "beacon", "wifi"]
    stores = ["sh-jingan", "sh-pudong", "bj-sanlitun"]
    for i in range(count - 1):
        docs.append(
            {
                "id": f"bench-{i:05d}",
                "name": f"bench {i}",
                "priority": i % 500,
                "when": {"event": events[i % len(events)]},
                # independent of the event type (i % 3 follows from i % 6: every check-in
                # trigger used to be for one store, three times the candidates of a spread)
                "stores": [stores[(i // len(events)) % len(stores)]],
                "if": f"member.visits > {i % 50} and member.tier == 'gold' and hour() >= {i % 24}",
                "then": [{"type": "message", "channel": "push", "template": "offer {member.tier}"}],
                "guardrails": {"cooldown": "1d"},
            }
        )
    return docs


GATEWAY_FLUSH_S = 0.05


class Load:
    """Members and their events, produced into one configuration's topics."""

    def __init__(
        self, bootstrap: str, prefix: str, members: int, resolution: bool, per_record: int = 1
    ) -> None:
        self.bootstrap, self.prefix, self.members = bootstrap, prefix, members
        self.resolution = resolution
        # Events per input record: 1, or batch envelopes of up to this many events per topic,
        # the way a sensor controller or POS gateway posts them.
        self.per_record = per_record
        self.records = 0  # input records produced (what faust's ceilings read)
        self.rng = random.Random(11)
        self.stores = ["sh-jingan", "sh-pudong", "bj-sanlitun"]
        self.zones = {
            "sh-jingan": ["cosmetics", "fashion", "food-court"],
            "sh-pudong": ["cosmetics", "electronics", "food-court"],
            "bj-sanlitun": ["fashion", "kids"],
        }

    def registration(self, i: int, ts: int) -> list[tuple[str, bytes, bytes]]:
        return registration_records(i, ts)

    def event(self, ts: int) -> tuple[str, bytes, bytes]:
        i = self.rng.randrange(self.members)
        store = self.rng.choice(self.stores)
        who = {"app_device_id": f"dev-{i:07d}"} if self.resolution else {"member_id": f"m-{i:07d}"}
        roll = self.rng.random()
        base = {"event_id": uuid.uuid4().hex, "ts": ts, "store_id": store}
        if roll < 0.35:
            body = {**base, "kind": "checkin", **who}
            topic = "checkins"
        elif roll < 0.8:
            zone = self.rng.choice(self.zones[store])
            body = {
                **base,
                "kind": self.rng.choice(["enter", "ranging", "ranging"]),
                "beacon_id": f"b-{store}-{zone}",
                "rssi": self.rng.randrange(-90, -40),
                "app_device_id": f"dev-{i:07d}",
                **({} if self.resolution else {"member_id": f"m-{i:07d}"}),
            }
            topic = "beacons"
        else:
            body = {
                **base,
                "kind": "sale",
                "receipt_id": uuid.uuid4().hex[:12],
                "total": round(self.rng.uniform(10, 900), 2),
                **({"member_card": f"card-{i:07d}"} if self.resolution else who),
            }
            topic = "pos"
        return topic, f"{i}".encode(), orjson.dumps(body)

    async def produce(
        self, records, rate: float | None = None, duration: float = 0, batched: bool = False
    ) -> int:
        """Events sent (one per record, or in envelopes of `per_record` when `batched`)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=20, max_batch_size=256 * 1024, acks=1
        )
        await producer.start()
        sent = 0
        size = self.per_record if batched else 1
        # A gateway per topic posts an envelope when it holds `size` events or its oldest event
        # has waited GATEWAY_FLUSH_S (so a trickle still arrives in batches, not one by one).
        pending: dict[str, list[bytes]] = {}
        since: dict[str, float] = {}

        async def send(topic: str, key: bytes, value: bytes) -> None:
            if size == 1:
                await producer.send(self.prefix + topic, value, key=key)
                self.records += 1
                return
            group = pending.setdefault(topic, [])
            if not group:
                since[topic] = time.monotonic()
            group.append(value)
            if len(group) >= size:
                await send_group(topic)

        async def send_group(topic: str) -> None:
            group = pending.pop(topic, [])
            if group:
                body = b'{"events":[' + b",".join(group) + b"]}"
                self.records += 1
                await producer.send(
                    self.prefix + topic, body, key=f"gw-{self.records % 8}".encode()
                )

        try:
            if rate is None:
                for topic, key, value in records:
                    await send(topic, key, value)
                    sent += 1
            else:
                start = time.monotonic()
                while time.monotonic() - start < duration:
                    due = int((time.monotonic() - start) * rate)
                    while sent < due:
                        await send(*self.event(int(time.time() * 1000)))
                        sent += 1
                    for topic in list(pending):
                        if time.monotonic() - since[topic] >= GATEWAY_FLUSH_S:
                            await send_group(topic)
                    await asyncio.sleep(0.005)
            for topic in list(pending):
                await send_group(topic)
            await producer.flush()
        finally:
            await producer.stop()
        return sent


async def raw_rate(bootstrap: str, topics: list[str], expected: int) -> float:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    seen, start = 0, time.monotonic()
    try:
        while seen < expected and time.monotonic() - start < 300:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for rec in records:
                    orjson.loads(rec.value)  # a consumer that does not even parse is no ceiling
                    seen += 1
    finally:
        await consumer.stop()
    return seen / (time.monotonic() - start)


async def end_offsets(bootstrap: str) -> dict[str, int]:
    """Records ever written to each topic (sum of partition end offsets), changelogs included."""
    lister = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await lister.start()
    try:
        topics = [t for t in await lister.topics() if not t.startswith("__")]
    finally:
        await lister.stop()
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()  # named topics: their partitions are in its metadata
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    written: dict[str, int] = {}
    for tp, end in ends.items():
        written[tp.topic] = written.get(tp.topic, 0) + end
    return written


def per_event(before: dict[str, int], after: dict[str, int], events: int) -> dict[str, float]:
    """Kafka records written per input event, by topic: faust pays a produce for each (and a
    consume for each one a StorePulse agent reads), so this is the cost model of an event."""
    grown = {t: n - before.get(t, 0) for t, n in after.items()}
    return {t: round(n / events, 2) for t, n in sorted(grown.items()) if n > 0}


async def latencies(bootstrap: str, topic: str, stop: asyncio.Event) -> list[float]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest"
    )
    await consumer.start()
    out: list[float] = []
    try:
        await consumer.seek_to_end()
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for d in (d for rec in records for d in unpack(rec.value)):
                    if d["outcome"] == "sent" and d["trigger_id"] == "bench-probe":
                        out.append(d["delivered_at"] - d["event_ts"])
    finally:
        await consumer.stop()
    return out


async def faust_passthrough(
    bootstrap: str, topics: list[str], expected: int, consume_only: bool = False
) -> float:
    result = ROOT / ".run" / "bench" / f"passthrough-{uuid.uuid4().hex[:6]}.txt"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "passthrough.py"),
        *(["--consume-only"] if consume_only else []),
        bootstrap,
        str(expected),
        str(result),
        *topics,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await asyncio.wait_for(proc.wait(), 600)
    except TimeoutError:
        os.killpg(proc.pid, 9)
    text = result.read_text().strip() if result.exists() else ""
    return float(text) if text else float("nan")


BENCH_TOKEN = "bench-token"
UNKNOWN = (1, 1_000_000)  # not done: asked again half a second later


def backlog(port: int, prefix: str) -> tuple[int, int]:
    """(records not yet committed on the input topics, on member-events) of one worker;
    UNKNOWN while the worker cannot say (busy past the timeout, end offsets not known yet)."""
    try:
        parts = partitions(port, BENCH_TOKEN)
    except (OSError, ValueError, KeyError):  # a worker busy with the backlog answers late
        return UNKNOWN
    inputs = member_events = 0
    for p in parts:
        end, committed, topic = p["end_offset"], p["faust_committed"], str(p["topic"])
        if not isinstance(end, int):
            return UNKNOWN
        waiting = max(0, end - (committed if isinstance(committed, int) else 0))
        if topic == prefix + "member-events":
            member_events += waiting
        elif topic.removeprefix(prefix) in INPUTS:
            inputs += waiting
    return inputs, member_events


def rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a worker (and any child) has used so far."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(k) for k in kids] + [g for k in kids for g in _children(int(k))]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def processed(procs: list[WorkerProcess], prefix: str) -> float:
    """When every input partition and member-events (which also carries the `identified`
    hand-overs the edge makes, and timer ticks, hence a little slack) is committed to its end
    offset, as the workers' own /health?partitions=1 reports. Counters would mislead: records
    read twice (a repair's seek) count again."""
    start = time.monotonic()
    while time.monotonic() - start < 3600:
        await asyncio.sleep(0.5)
        lags = [backlog(p.web_port, prefix) for p in procs]
        if all(inputs == 0 and member_events <= 10 for inputs, member_events in lags):
            return time.monotonic()
    raise RuntimeError(f"{prefix}: backlog not processed within an hour")


async def run_config(
    infra: LocalInfra,
    workdir: Path,
    name: str,
    workers: int,
    triggers: int,
    members: int,
    events: int,
    resolution: bool,
    latency_s: float,
    latency_runs: int = 3,
    extra_env: dict[str, str] | None = None,
    *,
    with_passthrough: bool = True,
    bulk: bool = False,
    per_record: int = 1,
) -> Result:
    prefix, app_id = f"b{name}-", f"bench-{name}-{uuid.uuid4().hex[:4]}"
    tdir = workdir / f"triggers-{name}"
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "bench.yaml").write_text(json.dumps({"triggers": trigger_docs(triggers)}))
    env = {
        **infra.env(),
        "STOREPULSE_TOPIC_PREFIX": prefix,
        "STOREPULSE_APP_ID": app_id,
        "STOREPULSE_REDIS_PREFIX": app_id,
        "STOREPULSE_TRIGGERS_PATH": str(tdir),
        "STOREPULSE_LOG_LEVEL": "warn",
        "STOREPULSE_API_TOKEN": BENCH_TOKEN,
        "STOREPULSE_PARTITIONS": str(infra.partitions),
        **(extra_env or {}),
    }
    from contracts.topic_configs import topic_configs

    await create_topics(infra.bootstrap, topic_configs(prefix), infra.partitions)
    load = Load(infra.bootstrap, prefix, members, resolution, per_record)
    now = int(time.time() * 1000)
    if bulk:  # straight into Redis and the changelog: what registration would leave behind
        from core.settings import Settings

        took = await bulk_load(Settings.from_env(env), members)
        print(f"  bulk-loaded {members:,} members: {took}", flush=True)
        produced = 0
    else:
        regs = (r for i in range(members) for r in load.registration(i, now))
        produced = await load.produce(regs)
    inputs = [prefix + t for t in INPUTS]
    procs = [WorkerProcess(env=env, workdir=workdir, name=f"{name}-w{i}") for i in range(workers)]
    try:
        for p in procs:  # a bulk load is restored from the changelog before the worker is ready
            p.start(timeout=max(180, members / 1000))
        # Registrations first, untimed: the rate is that of the event mix the latency probe then
        # sends at half of it (timed together, cheap registrations made "half" too much for the
        # expensive events of 10,000 triggers, and a queue grew through the latency window).
        await processed(procs, prefix)
        written_before = await end_offsets(infra.bootstrap)
        cpu_before = sum(cpu_s(p.pid) for p in procs if p.pid)
        start = time.monotonic()
        events_in = await load.produce((load.event(now) for _ in range(events)), batched=True)
        produced += events_in
        rate = events_in / (await processed(procs, prefix) - start)
        # Less noisy than events/s: what each event cost the workers, whatever else ran.
        cpu_us = (sum(cpu_s(p.pid) for p in procs if p.pid) - cpu_before) / events_in * 1e6
        # Latency is measured on an idle pipeline: every action of the backlog delivered first, or
        # the percentiles would measure the queue the throughput phase left behind.
        drained_by = time.monotonic() + 600
        while time.monotonic() < drained_by:
            totals = [metrics(p.web_port) for p in procs]
            actions = sum(t.get("storepulse_actions_total", 0) for t in totals)
            delivered = sum(t.get("storepulse_deliveries_total", 0) for t in totals)
            if delivered >= actions:
                break
            await asyncio.sleep(0.5)
        written = per_event(written_before, await end_offsets(infra.bootstrap), events_in)
        ticks_before = sum(
            metrics(p.web_port).get("storepulse_timers_fired_total", 0) for p in procs
        )
        print(
            f"  {name}: {rate:.0f} events/s; latency at {rate / 2:.0f}/s, "
            f"{latency_runs} x {latency_s:.0f} s"
        )
        runs: list[list[float]] = []
        cpu_half, probe = 0.0, 0
        for _ in range(latency_runs):  # consecutive runs of the latency phase; the worst counts
            stop = asyncio.Event()
            watcher = asyncio.create_task(latencies(infra.bootstrap, prefix + "deliveries", stop))
            await asyncio.sleep(1)
            cpu_before = sum(cpu_s(p.pid) for p in procs if p.pid)
            sent = await load.produce((), rate=rate / 2, duration=latency_s, batched=True)
            produced += sent
            probe += sent
            await asyncio.sleep(3)
            stop.set()
            cpu_half += sum(cpu_s(p.pid) for p in procs if p.pid) - cpu_before
            runs.append(sorted(await watcher))
        half_cpu_us = cpu_half / max(probe, 1) * 1e6
        p99_runs = [
            round(r[min(len(r) - 1, int(0.99 * len(r)))], 1) if r else float("nan") for r in runs
        ]
        lat = max(runs, key=lambda r: r[min(len(r) - 1, int(0.99 * len(r)))] if r else float("inf"))
        # Timer ticks compete with live events: a backlog's visits, zones and dwell thresholds
        # come due minutes after its events (5 min zone timeout, 5/10/20 min dwell), and with many
        # members they can land in this window; the figure says whether they did.
        ticks = sum(metrics(p.web_port).get("storepulse_timers_fired_total", 0) for p in procs)
        ticks -= ticks_before
        rss = sum(rss_mb(p.pid) for p in procs if p.pid)
    finally:  # a failed or interrupted run leaves no worker behind
        for p in procs:
            p.stop()
    state = sum(dir_bytes(workdir / f"{p.name}-data") for p in procs)
    # The ceilings read the same records (registrations, backlog, probe) once the workers are gone.
    # They count records; times the events per record (registrations are single) = events/s.
    records, per = load.records, produced / max(load.records, 1)
    raw = await raw_rate(infra.bootstrap, inputs, records) * per
    passthrough, consume = (
        (
            round(await faust_passthrough(infra.bootstrap, inputs, records) * per),
            round(await faust_passthrough(infra.bootstrap, inputs, records, True) * per),
        )
        if with_passthrough
        else (float("nan"), float("nan"))
    )

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else float("nan")

    return Result(
        name,
        workers,
        triggers,
        members,
        produced,
        resolution,
        round(rate),
        round(raw),
        round(rate / raw, 5) if raw else 0.0,  # 3 places read 0.000 on a slow run
        pct(0.5),
        pct(0.95),
        pct(0.99),
        round(rss, 1),
        round(state / max(members, 1), 1),
        passthrough,
        consume,
        int(ticks),
        # written by StorePulse: the input topics are the load generator's
        {t.removeprefix(prefix): n for t, n in written.items() if t not in inputs},
        round(cpu_us),
        round(half_cpu_us),
        per_record,
        p99_runs,
    )


def machine() -> dict[str, object]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


def configurations(args: argparse.Namespace) -> list[tuple]:
    m, e = args.members, args.events
    if args.smoke:
        return [("smoke", 1, 10, m, e, True)]
    every = [
        # Input as batch envelopes of 50 events (what sensor controllers post): the target shape.
        ("1w-200t-batch50", 1, 200, m, e * 5, True, None, 50),
        ("1w-10t", 1, 10, m, e, True),
        ("1w-10t-noresolve", 1, 10, m, e, False),
        ("1w-200t", 1, 200, m, e, True),
        ("1w-1000t", 1, 1000, m, e, True),
        ("1w-10000t", 1, 10_000, m, e, True),
        ("2w-200t", 2, 200, m, e, True),
        # Actions only: no derived-events / decisions analytics streams (a setting).
        ("1w-200t-lean", 1, 200, m, e, True, {"STOREPULSE_ANALYTICS_TOPICS": ""}),
        # The member scale of a large retailer: bulk-loaded, then the same kind of backlog.
        ("1w-200t-big", 1, 200, args.big_members, args.big_events, True, None, 50),
    ]
    if not args.big_members:
        every.pop()
    wanted = set(args.configs.split(",")) if args.configs else None
    return [c for c in every if wanted is None or c[0] in wanted]


async def main(args: argparse.Namespace) -> list[Result]:
    workdir = ROOT / ".run" / "bench"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    results: list[Result] = []
    with LocalInfra(
        partitions=args.partitions, workdir=workdir / "infra", keep_workdir=True
    ) as infra:
        for name, w, t, m, e, res, *rest in configurations(args):
            print(
                f"running {name}: {w} worker(s), {t} triggers, {m} members, {e} events ...",
                flush=True,
            )
            results.append(
                await run_config(
                    infra,
                    workdir,
                    name,
                    w,
                    t,
                    m,
                    e,
                    res,
                    args.latency_seconds,
                    args.latency_runs,
                    rest[0] if rest else None,
                    with_passthrough=not args.skip_passthrough,
                    bulk=args.bulk or (args.bulk_from and m >= args.bulk_from),
                    per_record=rest[1] if len(rest) > 1 else 1,
                )
            )
    header = (
        "config",
        "workers",
        "triggers",
        "members",
        "events/s",
        "raw/s",
        "ratio",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "RSS MB",
        "state B/member",
        "faust pass-through/s",
        "faust consume/s",
        "ticks in latency window",
    )
    print(" | ".join(header))
    for r in results:
        print(
            " | ".join(
                str(x)
                for x in (
                    r.name,
                    r.workers,
                    r.triggers,
                    r.members,
                    r.events_per_s,
                    r.raw_events_per_s,
                    r.ratio_to_raw,
                    r.p50_ms,
                    r.p95_ms,
                    r.p99_ms,
                    r.rss_mb,
                    r.state_bytes_per_member,
                    r.faust_passthrough_per_s,
                    r.faust_consume_per_s,
                    r.timer_ticks_during_latency,
                )
            )
        )
    for r in results:
        total = sum(r.records_per_event.values())
        detail = ", ".join(f"{t} {n}" for t, n in r.records_per_event.items())
        print(
            f"{r.name} ({r.input_events_per_record} per input record): "
            f"{r.cpu_us_per_event} us of worker CPU per event in the backlog, "
            f"{r.cpu_us_per_event_half_load} at half load; {total:.2f} Kafka records "
            f"written per event, input excluded ({detail}); faust consume-only "
            f"{r.faust_consume_per_s} events/s on the same records, StorePulse at "
            f"{r.events_per_s / r.faust_consume_per_s if r.faust_consume_per_s else 0:.2f} of it; "
            f"p99 {r.p99_runs_ms} ms in {len(r.p99_runs_ms)} consecutive latency runs"
        )
    if not args.smoke:
        out = Path(args.out)
        out.write_text(  # noqa: ASYNC240 - once, at the end
            json.dumps(
                {
                    "machine": machine(),
                    "when": time.strftime("%Y-%m-%d"),
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {out}")
    return results


if __name__ == "__main__":
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--big-members", type=int, default=1_000_000, help="members of 1w-200t-big (0: skip it)"
    )
    parser.add_argument("--big-events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument(
        "--latency-runs", type=int, default=3, help="consecutive latency phases (worst reported)"
    )
    parser.add_argument("--smoke", action="store_true", help="one tiny configuration (tests)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "latest.json"))
    parser.add_argument(
        "--skip-passthrough", action="store_true", help="no faust ceiling (slow on big backlogs)"
    )
    parser.add_argument("--configs", default="", help="comma-separated subset, e.g. 1w-10t,2w-200t")
    parser.add_argument(
        "--bulk", action="store_true", help="load members into Redis + changelog (bench/bulk_load)"
    )
    parser.add_argument(
        "--bulk-from",
        type=int,
        default=100_000,
        help="bulk-load from this many members on (registering through the pipeline is slow)",
    )
    results = asyncio.run(main(parser.parse_args()))
    print((statistics.mean(r.events_per_s for r in results) > 0 and "done") or "no throughput")
