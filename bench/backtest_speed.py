"""A backtest end to end on a real Kafka broker: member events recorded as the live worker writes
them (envelopes of 50 per record, each member on its partition), replayed by
`triggers/replay.backtest` with 1 trigger and with 200, in one process and in several.
Prints events/s (wall time, what a marketer waits for) per configuration.

`python bench/backtest_speed.py [--events 200000] [--processes 1,2]` (issue #19 asks for
≥ 50,000 events/s; see docs/benchmark.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Load, trigger_docs  # noqa: E402
from bench.step_cost import _FIELDS, scope  # noqa: E402
from contracts.batches import pack  # noqa: E402
from core.settings import Settings  # noqa: E402
from infra.kafka_admin import create_topics  # noqa: E402
from infra.local import LocalInfra  # noqa: E402
from state.timers import partition_of  # noqa: E402
from triggers.loader import parse_triggers  # noqa: E402
from triggers.replay import backtest  # noqa: E402


async def record_events(settings: Settings, events: int, members: int) -> None:
    """`events` member events of the benchmark's mix on `member-events`, 50 per record."""
    now = int(time.time() * 1000) - events  # one per ms, ending now
    load = Load("", "", members, resolution=False)
    by_partition: dict[int, list[dict[str, Any]]] = {}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    await producer.start()
    topic = settings.topic_prefix + "member-events"
    try:
        for n in range(events):
            ts = now + n
            t, _key, value = load.event(ts)
            body = orjson.loads(value)
            ev = scope(t, value, ts, settings, body.get("member_id") or "guest")
            item = {**{k: ev[k] for k in _FIELDS}, "source": t, "attrs": ev}
            part = partition_of(item["member_id"], settings.partitions)
            batch = by_partition.setdefault(part, [])
            batch.append(item)
            if len(batch) == 50:
                await producer.send(topic, pack("events", batch), partition=part)
                by_partition[part] = []
        for part, batch in by_partition.items():
            if batch:
                await producer.send(topic, pack("events", batch), partition=part)
        await producer.flush()
    finally:
        await producer.stop()


async def main(args: argparse.Namespace) -> None:
    with LocalInfra(partitions=args.partitions) as infra:
        settings = Settings.from_env({**infra.env(), "STOREPULSE_TOPIC_PREFIX": "bt-"})
        await create_topics(infra.bootstrap, {"bt-member-events": {}}, args.partitions)
        started = time.monotonic()
        await record_events(settings, args.events, args.members)
        print(f"recorded {args.events:,} events in {time.monotonic() - started:.0f} s", flush=True)
        for triggers in (1, 200):
            drafts = parse_triggers(trigger_docs(triggers), "bench")
            for processes in args.processes:
                run = dataclasses.replace(
                    settings, backtest_processes=processes, backtest_parallel_from=1
                )
                report = await backtest(run, drafts, "instead")
                r = report["run"]
                print(
                    f"{triggers:4d} triggers, {r['processes']} process(es): "
                    f"{report['window']['events']:,} events in {r['seconds']} s = "
                    f"{r['events_per_s']:,} events/s",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--processes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2]
    )
    asyncio.run(main(parser.parse_args()))
