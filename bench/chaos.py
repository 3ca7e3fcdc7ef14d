"""`make chaos`: faults under a steady stream, with every input record accounted for.

Each fault runs on its own topics, consumer group and Redis prefix, against real Kafka and Redis
started here:

- worker-kill     SIGKILL the worker mid-stream and start it again
- redis-restart   stop redis-server (append-only file), start it again
- rebalance-kill  two workers; SIGKILL one, the other takes its partitions over
- malformed       10 % malformed records at steady rate, then backlog bursts clean and with
                  10 % malformed, alternated (good records/s compared)
- broker-restart  stop the Kafka broker, start it again (same port, same data)
- redis-flush     FLUSHALL mid-stream (a failover to an empty replica, an operator's mistake)
- redis-lost      stop redis-server, delete its data, start it empty (a lost volume)

Registered members with consent check in, walk past beacons and buy; 2 % of the events are sent
twice. A trigger pushes a webhook (a local receiver) on every check-in; another sends a coupon
from a pool of COUPON_BUDGET on every sale (spent within seconds, before the fault). After the
stream and a drain, everything is read back from Kafka and checked against the input,
independently of the workers' own counters (which a SIGKILL resets):

- accounted: input records that were forwarded to member-events, dead-lettered with their
  position, or are a repeat of an event_id that was forwarded;
- missing / duplicates_delivered: receiver deliveries against one action per distinct valid
  check-in;
- state_mismatches: members whose sales count and spend in the member-state changelog differ
  from a sum over the distinct sales produced;
- recovery_s: from the end of the fault until every partition delivers actions again for events
  produced after it;
- coupons_over_budget: distinct coupon codes received beyond the pool's budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts.batches import unpack  # noqa: E402
from core.settings import Settings  # noqa: E402
from faust_ext import kafka_backoff  # noqa: E402
from infra.kafka_admin import create_topics  # noqa: E402
from infra.local import LocalInfra  # noqa: E402
from infra.process import unwind_on_sigterm  # noqa: E402
from infra.receiver import SECRET, Receiver  # noqa: E402
from infra.worker_process import WorkerProcess, health, metrics, partitions  # noqa: E402

INPUTS = ("checkins", "beacons", "pos", "identity", "members")
# In about half the rebalance-kill runs faust leaves a joining worker's partitions fetched but
# never processed (faust-streaming #166/#629 family); the workers' partition watch repairs it
# (notes: stall_repairs), which is what this fault now also tests.
FAULTS = (
    "worker-kill",
    "redis-restart",
    "rebalance-kill",
    "malformed",
    "broker-restart",
    "redis-flush",
    "redis-lost",
)
TRIGGER = "chaos-checkin"
COUPON_TRIGGER, COUPON_POOL, COUPON_BUDGET = "chaos-coupon", "chaos-pool", 40
# A SIGKILL between a gateway's 200 and the Redis "done" mark makes the next owner send that
# action again after the claim timeout, with the same Idempotency-Key (its action id): at most
# one per kill. Anything more, or any on the other faults, is a failure.
SIGKILL_RESENDS = {"worker-kill": 1, "rebalance-kill": 1}
STORES = ("sh-jingan", "sh-pudong")


@dataclass
class Row:
    fault: str
    shape: str  # the input shape: `single` (one event per record) or `batch` (envelopes)
    events_in: int
    accounted: int
    duplicates_delivered: int
    missing: int
    recovery_s: float | None
    state_mismatches: int
    dead_lettered: int
    repeats_sent: int
    unexpected_actions: int
    coupons_over_budget: int = 0
    coupons_issued: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (
            "error" not in self.notes
            and self.accounted == self.events_in
            and self.duplicates_delivered <= SIGKILL_RESENDS.get(self.fault, 0)
            and self.missing == 0
            and self.state_mismatches == 0
            and self.unexpected_actions == 0
            and self.coupons_over_budget == 0
            and (self.recovery_s is not None or self.fault == "malformed")
        )


class Stream:
    """What the harness sends, remembered so it can be checked (the truth is read back)."""

    def __init__(
        self, bootstrap: str, prefix: str, members: int, malformed: float, per_record: int = 1
    ) -> None:
        self.bootstrap, self.prefix, self.members = bootstrap, prefix, members
        self.malformed_share = malformed
        self.rng = random.Random(7)
        self.malformed: set[bytes] = set()  # whole records, or events inside an envelope
        # > 1: events go out in envelopes of up to this many per topic, as sensor controllers
        # post them (bytes that are not JSON still go alone: no controller sends half an array)
        self.per_record = per_record
        self.buffers: dict[str, list[bytes]] = {}
        self.batches = 0
        self.repeats = 0
        self.producer: AIOKafkaProducer | None = None
        # Events handed to `send` and not yet acknowledged by the broker: a failed send is sent
        # again from its callback, so the set of futures can be empty while one is still on its
        # way (flush once returned then, and the check missed ~800 events of a broker restart).
        self.unacked = 0
        self.failed_sends = 0

    async def start(self) -> None:
        # Idempotent, all acks, and patient: a broker restart holds batches, it does not fail them.
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=120_000,
            retry_backoff_ms=250,
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            try:
                await asyncio.wait_for(self.flush(), 60)
            finally:
                await self.producer.stop()

    async def send(self, topic: str, key: bytes, value: bytes, again: bool = False) -> None:
        assert self.producer is not None
        if not again:
            self.unacked += 1
        while True:
            try:
                fut = await self.producer.send(self.prefix + topic, value, key=key)
                break
            except Exception as exc:  # metadata unavailable while the broker is down
                self.failed_sends += 1
                print(f"  (send retried: {type(exc).__name__})", flush=True)
                await asyncio.sleep(0.5)
        fut.add_done_callback(lambda f: self._done(f, topic, key, value))

    def _done(self, fut: asyncio.Future[Any], topic: str, key: bytes, value: bytes) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.failed_sends += 1
            asyncio.get_running_loop().create_task(self.send(topic, key, value, again=True))
        else:
            self.unacked -= 1

    async def emit(self, topic: str, key: bytes, value: bytes) -> None:
        """One event: sent on its own, or added to its topic's envelope."""
        if self.per_record == 1 or value.startswith(b"{not json"):
            await self.send(topic, key, value)
            return
        buffer = self.buffers.setdefault(topic, [])
        buffer.append(value)
        if len(buffer) >= self.per_record:
            await self.send_buffers(topic)

    async def send_buffers(self, only: str | None = None) -> None:
        for topic in [only] if only else list(self.buffers):
            buffer = self.buffers.pop(topic, [])
            if buffer:
                self.batches += 1
                key = f"controller-{self.batches % 8}".encode()
                await self.send(topic, key, b'{"events":[' + b",".join(buffer) + b"]}")

    async def flush(self) -> None:
        await self.send_buffers()
        deadline = time.monotonic() + 180
        while self.unacked:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.unacked} records not acknowledged by Kafka in 180 s")
            await asyncio.sleep(0.1)

    async def register(self) -> None:
        now = int(time.time() * 1000)
        for i in range(self.members):
            m = f"m-{i:05d}"
            profile = {
                "event_id": f"p-{m}",
                "ts": now,
                "kind": "profile",
                "member_id": m,
                "tier": "gold" if i % 5 == 0 else "pink",
                "consent": {"push": True},
            }
            link = {
                "event_id": f"r-{m}",
                "ts": now,
                "kind": "registration",
                "member_id": m,
                "app_device_id": f"dev-{i:05d}",
                "member_card": f"card-{i:05d}",
            }
            await self.send("members", m.encode(), orjson.dumps(profile))
            await self.send("identity", m.encode(), orjson.dumps(link))
        await self.flush()

    def record(self, malformed_share: float | None = None) -> tuple[str, bytes, bytes]:
        share = self.malformed_share if malformed_share is None else malformed_share
        i = self.rng.randrange(self.members)
        key = f"{i}".encode()
        if self.rng.random() < share:
            return self._malformed(key)
        store = self.rng.choice(STORES)
        base = {"event_id": uuid.uuid4().hex, "ts": int(time.time() * 1000), "store_id": store}
        roll = self.rng.random()
        if roll < 0.4:
            return (
                "checkins",
                key,
                orjson.dumps({**base, "kind": "checkin", "app_device_id": f"dev-{i:05d}"}),
            )
        if roll < 0.75:
            body = {
                **base,
                "kind": "ranging",
                "beacon_id": f"b-{store}-cosmetics",
                "rssi": self.rng.randrange(-90, -40),
                "app_device_id": f"dev-{i:05d}",
            }
            return "beacons", key, orjson.dumps(body)
        body = {
            **base,
            "kind": "sale",
            "receipt_id": uuid.uuid4().hex[:12],
            "total": round(self.rng.uniform(10, 900), 2),
            "member_card": f"card-{i:05d}",
        }
        return "pos", key, orjson.dumps(body)

    def _malformed(self, key: bytes) -> tuple[str, bytes, bytes]:
        tag = uuid.uuid4().hex
        value = self.rng.choice(
            [
                b"{not json " + tag.encode(),
                orjson.dumps({"event_id": tag, "ts": "yesterday", "kind": "checkin"}),
                orjson.dumps({"event_id": tag, "kind": "checkin", "store_id": "sh-jingan"}),
                orjson.dumps({"event_id": tag, "ts": 1, "kind": "teleport", "app_device_id": "x"}),
            ]
        )
        self.malformed.add(value)
        return self.rng.choice(["checkins", "pos", "beacons"]), key, value

    async def steady(
        self, rate: float, seconds: float, malformed_share: float | None = None
    ) -> int:
        # Every one of rate * seconds events goes out, at the rate when the producer keeps up: a
        # send held while the broker is away (a full batch waits for it) is caught up after,
        # not skipped (the loop once ended with the window and sent 60 % of a broker restart's
        # batch stream, so no event after the repair and no recovery figure).
        start, sent, count = time.monotonic(), 0, int(rate * seconds)
        while sent < count:
            elapsed = time.monotonic() - start
            while sent < min(count, int(elapsed * rate)):
                topic, key, value = self.record(malformed_share)
                await self.emit(topic, key, value)
                sent += 1
                if self.rng.random() < 0.02 and value not in self.malformed:
                    await self.emit(topic, key, value)  # the same event twice: a duplicate
                    self.repeats += 1
            await self.send_buffers()  # a controller posts what it has
            await asyncio.sleep(0.01)
        return sent

    async def burst(self, count: int, malformed_share: float) -> None:
        for _ in range(count):
            await self.emit(*self.record(malformed_share))
        await self.flush()


async def read_all(bootstrap: str, topics: list[str]) -> list[Any]:
    """Every record of `topics`, from the beginning to the end offsets read at the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    out: list[Any] = []
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in (consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                out.extend(records)
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        if todo:
            raise RuntimeError(f"could not read {sorted(map(str, todo))} to the end")
    finally:
        await consumer.stop()
    return out


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def action_id(member_id: str, event_id: str) -> str:
    from triggers.actions import action_id as make

    return make(TRIGGER, member_id, event_id, 0)


def purchases_of(record: dict[str, Any]) -> tuple[int, float]:
    p = record.get("purchases") or {}
    buckets = [*(p.get("days") or {}).values(), *(p.get("months") or {}).values()]
    return int(sum(b[0] for b in buckets)), round(sum(b[1] for b in buckets), 2)


async def check(
    infra: LocalInfra,
    prefix: str,
    app_id: str,
    stream: Stream,
    receiver: Receiver,
    repaired_at: float | None,
) -> Row:
    bootstrap = infra.bootstrap
    inputs = await read_all(bootstrap, [prefix + t for t in INPUTS])
    member_events = await read_all(bootstrap, [prefix + "member-events"])
    dead = await read_all(bootstrap, [prefix + "dead-letter"])
    changelog = await read_all(bootstrap, [f"{app_id}-member-state-changelog"])

    forwarded: set[str] = set()
    partition_of: dict[str, int] = {}
    for rec, ev in ((r, e) for r in member_events for e in unpack(r.value)):
        if ev.get("source") in INPUTS:
            forwarded.add(ev["event_id"])
            partition_of[ev["member_id"]] = rec.partition
    dead_at = {
        (d["source_topic"], d["partition"], d["offset"], d.get("index"))
        for d in map(orjson.loads, [r.value for r in dead])
    }
    events_in = 0
    accounted, seen = 0, set()
    lost: list[tuple[str, int, int, float]] = []
    checkin_of: dict[str, tuple[str, int, int, float]] = {}
    expected_actions: set[str] = set()
    sales: dict[str, dict[str, float]] = defaultdict(dict)
    for rec, index, raw in input_events(inputs):
        events_in += 1
        topic = rec.topic[len(prefix) :]
        if raw in stream.malformed:
            accounted += (rec.topic, rec.partition, rec.offset, index) in dead_at
            continue
        ev = orjson.loads(raw)
        accounted += ev["event_id"] in forwarded  # a repeat counts once it was dropped
        if ev["event_id"] not in forwarded:
            since = round(ev["ts"] / 1000 - (repaired_at or 0), 1)
            lost.append((topic, rec.partition, rec.offset, since))
        if ev["event_id"] in seen:
            continue
        seen.add(ev["event_id"])
        if topic == "checkins":
            member = "m-" + ev["app_device_id"].split("-", 1)[1]
            expected_actions.add(action_id(member, ev["event_id"]))
            checkin_of[action_id(member, ev["event_id"])] = (
                member,
                rec.partition,
                rec.offset,
                round(ev["ts"] / 1000 - (repaired_at or 0), 1),
            )
        elif topic == "pos":
            member = "m-" + ev["member_card"].split("-", 1)[1]
            sales[member][ev["event_id"]] = ev["total"]

    if lost:
        print(f"  not accounted (topic, partition, offset, s after repair): {lost[:20]}")
    latest: dict[str, dict[str, Any]] = {}
    for rec in changelog:
        if rec.value is not None:
            latest[orjson.loads(rec.key)] = orjson.loads(rec.value)
    mismatches = []
    for member, bought in sales.items():
        want = (len(bought), round(sum(bought.values()), 2))
        got = purchases_of(latest.get(member, {}))
        if got[0] != want[0] or abs(got[1] - want[1]) > 0.011:
            mismatches.append((member, want, got))
    if mismatches:
        print(f"  state mismatches (member, expected, stored): {mismatches[:5]}", flush=True)

    ours = {
        a: n for a, n in receiver.accepted.items() if receiver.bodies[a]["trigger_id"] == TRIGGER
    }
    absent = expected_actions - set(ours)
    if absent:
        outcomes: dict[str, list[str]] = defaultdict(list)
        records = await read_all(bootstrap, [prefix + "actions", prefix + "deliveries"])
        for d in (d for rec in records for d in unpack(rec.value)):
            if d["action_id"] in absent:
                seen_as = f"{d.get('outcome', 'emitted')}:{d.get('reason', '')}"
                outcomes[d["action_id"]].append(seen_as)
        print("  actions missing for check-ins (member, partition, offset, s after repair, seen):")
        for a in sorted(absent)[:10]:
            print(f"    {checkin_of[a]} {outcomes.get(a, 'never emitted')}", flush=True)
    codes = {
        receiver.bodies[a]["coupon"]["code"]
        for a in receiver.accepted
        if receiver.bodies[a]["trigger_id"] == COUPON_TRIGGER
    }
    recovery: float | None = None
    if repaired_at is not None:
        first: dict[int, float] = {}
        for a in ours:
            body = receiver.bodies[a]
            part = partition_of.get(body["member_id"])
            if part is not None and body["event_ts"] / 1000 >= repaired_at:
                first[part] = min(first.get(part, float("inf")), receiver.first_at[a])
        parts = set(partition_of.values())
        if first and parts <= set(first):
            recovery = round(max(first.values()) - repaired_at, 1)
    return Row(
        fault="",
        shape="single" if stream.per_record == 1 else "batch",
        events_in=events_in,
        accounted=accounted,
        duplicates_delivered=sum(n - 1 for a, n in ours.items() if n > 1),
        missing=len(expected_actions - set(ours)),
        recovery_s=recovery,
        state_mismatches=len(mismatches),
        dead_lettered=len(dead),
        repeats_sent=stream.repeats,
        unexpected_actions=len(set(ours) - expected_actions),
        coupons_over_budget=max(0, len(codes) - COUPON_BUDGET),
        coupons_issued=len(codes),
    )


def input_events(inputs: list[Any]) -> Any:
    """(record, index in its envelope or None, the event's bytes as sent) of every input event."""
    for rec in inputs:
        if not rec.value.startswith(b'{"events":['):
            yield rec, None, rec.value
            continue
        for index, event in enumerate(orjson.loads(rec.value)["events"]):
            yield rec, index, orjson.dumps(event)


def trigger_yaml(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "triggers": [
            {
                "id": TRIGGER,
                "name": "push on every check-in",
                "when": {"event": "checkin"},
                "then": [{"type": "message", "channel": "push", "template": "hi {member.tier}"}],
                "guardrails": {"quiet_hours": None, "max_event_age": "1h"},
            },
            {
                "id": COUPON_TRIGGER,
                "name": "a coupon for every sale, while the pool lasts",
                "when": {"event": "purchase"},
                "then": [
                    {
                        "type": "coupon",
                        "pool": COUPON_POOL,
                        "value": 10,
                        "template": "{coupon.code}",
                    }
                ],
                "guardrails": {"quiet_hours": None, "max_event_age": "1h"},
            },
        ]
    }
    (folder / "chaos.yaml").write_text(json.dumps(doc))


def total(procs: list[WorkerProcess], name: str) -> float:
    out = 0.0
    for p in procs:
        try:
            out += metrics(p.web_port).get(name, 0.0)
        except OSError:
            pass
    return out


async def run_fault(
    fault: str,
    infra: LocalInfra,
    receiver: Receiver,
    workdir: Path,
    args: argparse.Namespace,
    per_record: int = 1,
) -> Row:
    tag = uuid.uuid4().hex[:6]
    receiver.reset()  # each fault is judged on its own deliveries
    prefix, app_id = f"c{tag}-", f"chaos-{fault}-{tag}"
    trigger_yaml(workdir / f"triggers-{fault}")
    env = {
        **infra.env(),
        "STOREPULSE_TOPIC_PREFIX": prefix,
        "STOREPULSE_APP_ID": app_id,
        "STOREPULSE_REDIS_PREFIX": app_id,
        "STOREPULSE_TRIGGERS_PATH": str(workdir / f"triggers-{fault}"),
        "STOREPULSE_CHANNELS_PATH": str(workdir / "channels.yaml"),
        "STOREPULSE_COUPONS_PATH": str(workdir / "coupons.yaml"),
        "STOREPULSE_FREQUENCY_CAPS": "",
        "STOREPULSE_LOG_LEVEL": args.worker_log_level,
        "STOREPULSE_SESSION_TIMEOUT_S": "10",
        "STOREPULSE_STALL_AFTER_S": "10",
        "RECEIVER_SECRET": SECRET,
    }
    from contracts.topic_configs import topic_configs

    await create_topics(infra.bootstrap, topic_configs(prefix), infra.partitions)
    count = 2 if fault == "rebalance-kill" else 1
    shape = "single" if per_record == 1 else "batch"  # each run's logs and data kept apart
    procs = [
        WorkerProcess(env=env, workdir=workdir, name=f"{fault}-{shape}-w{i}") for i in range(count)
    ]
    for p in procs:
        await asyncio.to_thread(p.start, 180)
    print(f"  {count} worker(s) ready; registering members", flush=True)
    stream = Stream(
        infra.bootstrap, prefix, args.members, 0.1 if fault == "malformed" else 0.0, per_record
    )
    await stream.start()
    notes: dict[str, Any] = {}
    repaired_at: float | None = None
    try:
        await stream.register()
        deadline = time.monotonic() + 120
        # Links are made at the edge: once every registration is forwarded, devices resolve.
        while total(procs, "storepulse_events_forwarded_total") < 2 * args.members:
            if time.monotonic() > deadline:
                seen = {
                    p.name: (
                        health(p.web_port),
                        {
                            k: v
                            for k, v in metrics(p.web_port).items()
                            if k.startswith("storepulse_events_") or "lag" in k
                        },
                    )
                    for p in procs
                }
                for p in procs:  # what each worker's faust and aiokafka say, for the post-mortem
                    print(f"  {p.name} partitions: {partitions_view(p.web_port)}", flush=True)
                raise RuntimeError(f"registrations were not applied within 120 s: {seen}")
            await asyncio.sleep(0.5)

        print("  members registered; steady stream", flush=True)

        async def inject() -> float:
            await asyncio.sleep(args.seconds / 3)
            print(f"  fault: {fault}", flush=True)
            if fault == "worker-kill":
                procs[0].kill()
                at = time.time()
                await asyncio.to_thread(procs[0].start, 180)
                return at
            if fault in ("broker-restart", "redis-restart"):
                server = infra.kafka if fault == "broker-restart" else infra.redis
                assert server is not None, "the harness must start its own Kafka and Redis"
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(args.downtime)
                await asyncio.to_thread(server.start)
                return time.time()
            if fault == "rebalance-kill":
                procs[1].kill()
                return time.time()
            if fault in ("redis-flush", "redis-lost"):
                assert infra.redis is not None, "the harness must start its own Redis"
                if fault == "redis-flush":
                    await asyncio.to_thread(flush_redis, infra.redis_url)
                    return time.time()
                await asyncio.to_thread(infra.redis.lose_data)
                await asyncio.sleep(args.downtime)
                await asyncio.to_thread(infra.redis.start)
                return time.time()
            return time.time()

        injected = asyncio.create_task(inject())
        sent = await stream.steady(args.rate, args.seconds)
        repaired_at = await injected
        if fault != "malformed":  # traffic after the repair, however long the repair took
            sent += await stream.steady(args.rate, 3)  # (a slow broker restart once left none)
        if fault == "malformed":
            repaired_at = None
            notes.update(await burst_rates(stream, procs, args.burst, args.pairs))
        await stream.flush()
        print(f"  stream: {sent} records at {args.rate}/s; draining ...", flush=True)
        # Drain: until the in-count stops moving and the receiver has stopped receiving.
        quiet_since, last = time.monotonic(), (-1.0, -1)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            now = (total(procs, "storepulse_deliveries_total"), sum(receiver.accepted.values()))
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since > max(8.0, args.session_timeout + 2):
                break
            await asyncio.sleep(1)
        # Stalls the workers' partition watch repaired (a SIGKILLed worker's count is lost).
        repairs = total(procs, "storepulse_stall_repairs_total")
        if repairs:
            notes["stall_repairs"] = repairs
        if stream.failed_sends:
            notes["harness_sends_retried"] = stream.failed_sends
        retries = total(procs, "storepulse_delivery_retries_total")
        if retries:
            notes["delivery_retries"] = retries
        # Seconds between the deliveries of each action received twice: ~2 s is a webhook
        # retry after its timeout (the worker's loop stalled while the 200 was on its way),
        # ~10 s and more a claim taken over after a SIGKILL.
        gaps = sorted(
            round(t[1] - t[0], 1)
            for a, t in receiver.times.items()
            if len(t) > 1 and receiver.bodies[a]["trigger_id"] == TRIGGER
        )
        if gaps:
            notes["duplicate_gaps_s"] = gaps[:20]
            notes["duplicates_at_s_after_fault"] = sorted(
                round(t[1] - (repaired_at or 0), 1)
                for a, t in receiver.times.items()
                if len(t) > 1 and receiver.bodies[a]["trigger_id"] == TRIGGER
            )[:20]
        row = await check(infra, prefix, app_id, stream, receiver, repaired_at)
    finally:
        await stream.stop()
        for p in procs:
            p.stop()
    row.fault = fault
    row.notes = notes
    return row


async def burst_rates(
    stream: Stream, procs: list[WorkerProcess], size: int, pairs: int = 5
) -> dict[str, Any]:
    """Backlogs of `size` records, clean and 10 % malformed, in `pairs` pairs whose order
    alternates (so neither kind gains from going first): good records/s of each kind, from an
    idle worker until the good ones are forwarded to member-events. The ratio is the median of
    the pairs' ratios; each pair's is kept, so the spread of a shared machine shows."""
    good_total: dict[str, float] = {}
    seconds: dict[str, float] = {}
    pair_ratios: list[float] = []
    kinds = [("clean", 0.0), ("malformed_10pct", 0.1)]
    for n in range(pairs):
        pair: dict[str, float] = {}
        for label, share in kinds if n % 2 == 0 else kinds[::-1]:
            await stream.flush()
            await idle(procs)
            before = total(procs, "storepulse_events_forwarded_total")
            bad_before = len(stream.malformed)
            start = time.monotonic()
            await stream.burst(size, share)
            good = size - (len(stream.malformed) - bad_before)
            while total(procs, "storepulse_events_forwarded_total") < before + good:
                if time.monotonic() - start > 300:
                    raise RuntimeError(f"{label} burst not consumed within 300 s")
                await asyncio.sleep(0.05)
            took = time.monotonic() - start
            pair[label] = good / took
            good_total[label] = good_total.get(label, 0) + good
            seconds[label] = seconds.get(label, 0.0) + took
        pair_ratios.append(round(pair["malformed_10pct"] / pair["clean"], 2))
    rates: dict[str, Any] = {f"{k}_good_per_s": round(good_total[k] / seconds[k]) for k in seconds}
    rates["pair_ratios"] = pair_ratios
    rates["good_rate_ratio"] = statistics.median(pair_ratios)
    return rates


async def idle(procs: list[WorkerProcess], quiet_s: float = 2.0, limit_s: float = 30.0) -> None:
    """Until the workers' member agents have applied nothing new for `quiet_s` and every action
    is delivered: the previous burst's pushes (100/s at the gateway's limit) otherwise compete
    with the next burst, whichever kind it is."""
    last, since, start = -1.0, time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        now = total(procs, "storepulse_member_events_total")
        behind = total(procs, "storepulse_actions_total") - total(
            procs, "storepulse_deliveries_total"
        )
        if now != last or (behind > 0 and time.monotonic() - start < limit_s):
            last, since = now, time.monotonic()
        await asyncio.sleep(0.2)


def partitions_view(port: int) -> object:
    """`/health?partitions=1` of a worker (the default API token), or why not."""
    try:
        return partitions(port, Settings.api_token)
    except Exception as exc:  # a post-mortem must not hide the failure it explains
        return repr(exc)


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushall()


def table(rows: list[Row]) -> str:
    head = (
        "fault",
        "input",
        "events in",
        "accounted",
        "duplicates delivered",
        "missing",
        "recovery s",
        "state mismatches",
        "dead-lettered",
        f"coupons (budget {COUPON_BUDGET})",
    )
    lines = [" | ".join(head)]
    for r in rows:
        lines.append(
            " | ".join(
                str(x)
                for x in (
                    r.fault,
                    r.shape,
                    r.events_in,
                    r.accounted,
                    r.duplicates_delivered,
                    r.missing,
                    "-" if r.recovery_s is None else r.recovery_s,
                    r.state_mismatches,
                    r.dead_lettered,
                    r.coupons_issued,
                )
            )
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> list[Row]:
    kafka_backoff.install()
    # `fault:shape` runs that fault in that input shape only (the CI short run keeps to time)
    tokens = [f for f in args.faults.split(",") if f] if args.faults else list(FAULTS)
    only = {t.split(":")[0]: t.split(":")[1] for t in tokens if ":" in t}
    faults = [t.split(":")[0] for t in tokens]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise SystemExit(f"unknown fault(s) {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    shapes = [s for s in args.shapes.split(",") if s]
    if set(shapes) - {"single", "batch"}:
        raise SystemExit(f"--shapes {args.shapes!r}: use single, batch or both")
    workdir = ROOT / ".run" / "chaos"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    receiver = Receiver().start()
    (workdir / "channels.yaml").write_text(receiver.channels_yaml())
    (workdir / "coupons.yaml").write_text(
        f"pools:\n  {COUPON_POOL}: {{budget: {COUPON_BUDGET}, prefix: CH}}\n"
    )
    rows: list[Row] = []
    try:
        with LocalInfra(
            partitions=4, workdir=workdir / "infra", keep_workdir=True, persistent_redis=True
        ) as infra:
            for shape in shapes:
                for fault in faults:
                    if only.get(fault, shape) != shape:
                        continue
                    per_record = 1 if shape == "single" else args.batch_events
                    print(
                        f"running {fault} ({shape} input): {args.members} members, {args.rate}/s "
                        f"for {args.seconds} s",
                        flush=True,
                    )
                    try:
                        row = await asyncio.wait_for(
                            run_fault(fault, infra, receiver, workdir, args, per_record),
                            args.fault_timeout,
                        )
                    except Exception as exc:  # report it and go on with the next fault
                        error = f"{type(exc).__name__}: {exc}"[:500]
                        row = Row(
                            fault, shape, 0, 0, 0, 0, None, 0, 0, 0, 0, notes={"error": error}
                        )
                    print(f"  -> {asdict(row)}", flush=True)
                    rows.append(row)
    finally:
        receiver.stop()
    return rows


def report(rows: list[Row], out: Path) -> int:
    print(table(rows))
    out.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    print(f"wrote {out}")
    bad = [f"{r.fault} ({r.shape})" for r in rows if not r.ok]
    print("all faults recovered with nothing lost or doubled" if not bad else f"FAILED: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    unwind_on_sigterm()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--faults",
        default="",
        help=f"comma-separated subset of {','.join(FAULTS)}; fault:single or fault:batch runs "
        "it in that input shape only",
    )
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument(
        "--shapes", default="single,batch", help="input shapes: single, batch (envelopes) or both"
    )
    parser.add_argument("--batch-events", type=int, default=20, help="events per envelope")
    parser.add_argument("--rate", type=float, default=200.0, help="records/s of the steady stream")
    parser.add_argument("--seconds", type=float, default=45.0, help="length of the steady stream")
    parser.add_argument(
        "--downtime", type=float, default=5.0, help="broker/Redis stopped this long"
    )
    parser.add_argument("--burst", type=int, default=5000, help="records per malformed-rate burst")
    parser.add_argument("--pairs", type=int, default=5, help="clean/malformed burst pairs")
    parser.add_argument("--drain", type=float, default=180.0, help="max wait for the backlog")
    parser.add_argument("--fault-timeout", type=float, default=900.0, help="s per fault, at most")
    parser.add_argument("--worker-log-level", default="warn", help="crit/error/warn/info/debug")
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "chaos.json"))
    arguments = parser.parse_args()
    sys.exit(report(asyncio.run(main(arguments)), Path(arguments.out)))
