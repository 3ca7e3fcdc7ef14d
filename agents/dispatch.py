"""Dispatcher: delivers each action at most once, within its coupon budget, and records how.

Exactly-once effects outside Kafka come from Redis, not from Kafka transactions (faust's
`exactly_once` is experimental): the action id is claimed before sending and marked when done
(state/idempotency.py), so a replay after a crash or a rebalance sends nothing twice, and a
claim left by a crashed worker is taken over, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
import orjson

from agents.supervisor import supervised
from app import current
from channels.config import load_channels
from channels.registry import Channels
from contracts.batches import pack_chunks, unpack
from core.metrics import COUPON_RESERVATIONS, DELIVERIES, LATENCY, POOL_BUDGET, POOL_REMAINING
from edge.dead_letters import dead_letter
from faust_ext.batch_io import produce
from state import coupons, epoch, idempotency, member_data
from state.member_data import unsubscribe_url
from state.member_state import RETURNED
from state.redis_store import redis_client, with_redis
from topics import Action, CouponCode, Delivery, actions_topic, topic_name
from triggers.actions import INTERNAL, render

app, settings = current()

logger = logging.getLogger("storepulse.dispatch")


def well_formed(item: Any) -> str | None:
    """Why `item` is not an action, or None."""
    if not isinstance(item, dict):
        return f"a {type(item).__name__}, not an object"
    for name in ("action_id", "trigger_id", "member_id", "kind", "channel"):
        if not isinstance(item.get(name), str):
            return f"{name}: missing or not text"
    if not isinstance(item.get("payload"), dict) or not isinstance(item.get("event_ts"), int):
        return "payload or event_ts missing"
    return None


class Marks:
    """Final outcomes written to Redis behind the sends, in pipelines: the next action goes out
    while the last one's mark is on its way (awaiting each mark capped dispatch at one Redis
    round trip per action). An actions record is recorded and acked only after its marks are
    written (`written`), and what a SIGKILL can leave sent but unmarked is what was sent during
    one mark round trip, as before."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.pending: list[tuple[str, Any]] = []
        self.queued = 0  # marks ever queued (tickets)
        self.done = 0  # marks written
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, action_id: str, outcome: Any) -> int:
        self.pending.append((action_id, outcome))
        self.queued += 1
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        return self.queued

    async def written(self, ticket: int) -> None:
        if self.done >= ticket:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((ticket, fut))
        await fut

    def _writer(self, marks: list[tuple[str, Any]]) -> Callable[[], Awaitable[None]]:
        return lambda: idempotency.finish_many(self.redis, settings, marks)

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                marks, self.pending = self.pending, []
                try:
                    await with_redis(self._writer(marks), "idempotency mark")
                except Exception as exc:  # never leave a record waiting for ever
                    logger.exception("could not write %d delivery marks", len(marks))
                    for _, fut in self.waiters:
                        if not fut.done():
                            fut.set_exception(exc)
                    self.waiters = []
                    continue
                self.done += len(marks)
                ready = [w for w in self.waiters if w[0] <= self.done]
                self.waiters = [w for w in self.waiters if w[0] > self.done]
                for _, fut in ready:
                    if not fut.done():
                        fut.set_result(None)


class Dispatcher:
    def __init__(self) -> None:
        self.redis = redis_client(settings)
        self.channels = Channels(load_channels(settings.channels_path))
        self.pools = coupons.load_pools(settings.coupons_path)
        for name, pool in self.pools.items():  # what "nearly empty" is measured against
            POOL_BUDGET.labels(name).set(pool.budget)
        self.budgets_set = False
        self.timeout_ms = int(settings.claim_timeout_s * 1000)
        self.slots = asyncio.Semaphore(settings.dispatch_in_flight)  # deliveries at once
        self.codes: dict[str, str | None] = {}  # coupon codes issued for batches in flight
        self.tails: dict[str, asyncio.Future[None]] = {}  # each member's last chain in flight
        self.marks = Marks(self.redis)
        self.tickets: dict[str, int] = {}  # action id -> its mark's ticket (Marks.written)
        self.epoch = epoch.shared(settings)
        self.coupon_codes = topic_name("coupon-codes")
        self.issued: dict[str, tuple[str, str]] = {}  # action id -> (pool, code) sent with it

    async def deliver_batch(
        self, actions: list[Action], partition: int, offset: int
    ) -> list[tuple[str, str]]:
        """Outcomes of a batch's actions, in order. Claims are made in one pipeline and held by
        one renewal task; a member's actions go out in order, members in parallel up to
        STOREPULSE_DISPATCH_IN_FLIGHT deliveries at once."""
        if not self.budgets_set:
            await self.epoch.run(
                lambda pipe: coupons.queue_new_pools(pipe, settings, self.pools), "coupon pools"
            )
            self.budgets_set = True
        outcomes: list[tuple[str, str] | None] = [None] * len(actions)
        wanted: list[int] = []
        now = time.time() * 1000
        for i, action in enumerate(actions):
            deliver_by = action["payload"].get("deliver_by")
            if action["channel"] == INTERNAL:
                outcomes[i] = ("sent", "applied")  # points and tags took effect in member state
            elif deliver_by and now > deliver_by:
                outcomes[i] = ("suppressed", "stale")  # a backlog after an outage: not yesterday's
            else:
                wanted.append(i)
        if wanted:  # erased meanwhile: in flight when the member left (state/member_data.py)
            members = sorted({actions[i]["member_id"] for i in wanted})
            gone = await with_redis(
                lambda: member_data.erased_among(self.redis, settings, members), "erasure marks"
            )
            for i in (i for i in wanted if actions[i]["member_id"] in gone):
                outcomes[i] = ("suppressed", "erased")
            wanted = [i for i in wanted if actions[i]["member_id"] not in gone]
        if wanted:
            ids = [actions[i]["action_id"] for i in wanted]
            claims = await self._claim(ids)
            mine = [i for i in wanted if claims[actions[i]["action_id"]] == "new"]
            for i in wanted:
                if claims[actions[i]["action_id"]] == "done":
                    outcomes[i] = ("suppressed", "duplicate")
            if mine:
                holding = asyncio.create_task(
                    idempotency.hold_many(
                        self.redis,
                        settings,
                        [actions[i]["action_id"] for i in mine],
                        self.timeout_ms,
                    )
                )
                try:
                    await self._issue_coupons(actions, mine)
                    await self._deliver_claimed(actions, mine, outcomes, partition, offset)
                    tickets = [self.tickets.pop(actions[i]["action_id"], 0) for i in mine]
                    await self.marks.written(max(tickets, default=0))
                finally:
                    holding.cancel()
        return [o or ("failed", "internal") for o in outcomes]

    async def _claim(self, ids: list[str]) -> dict[str, Any]:
        """Claims for a batch's actions in one epoch-checked pipeline; on a data set found lost
        the claims just made are released, and made again after the rebuild."""
        mine = [idempotency.claim_value()]

        def build(pipe: Any) -> None:
            mine[0] = idempotency.claim_value()
            idempotency.queue_claims(pipe, settings, ids, mine[0])

        async def undo(replies: list[Any]) -> None:
            await idempotency.release_claims(self.redis, settings, ids, replies, mine[0])

        replies = await self.epoch.run(build, "idempotency claim", undo)
        return await with_redis(
            lambda: idempotency.settle_claims(self.redis, settings, ids, replies, self.timeout_ms),
            "idempotency claim",
        )

    async def _issue_coupons(self, actions: list[Action], mine: list[int]) -> None:
        """Codes for the batch's coupon actions, in one pipeline (idempotent per action id).

        Each code is recorded on `coupon-codes` (and acknowledged) before its pool is charged,
        and marked `refused` there when the pool had none left: what a rebuild of the pool
        counts (state/rebuild.py). A pool whose count is missing from Redis issues nothing: the
        batch waits for a rebuild (money fails closed)."""
        wanted = [
            (actions[i]["payload"]["pool"], actions[i]["action_id"], actions[i]["member_id"])
            for i in mine
            if actions[i]["kind"] == "coupon"
        ]
        if not wanted:
            return
        by_id = {actions[i]["action_id"]: actions[i] for i in mine}
        await self._record_codes([by_id[a] for _, a, _ in wanted], "reserved")
        reader: list[Any] = []
        while True:

            def build(pipe: Any) -> None:
                reader[:] = [coupons.queue_issues(pipe, settings, self.pools, wanted)]

            replies = await self.epoch.run(build, "coupon pool")
            codes, left = reader[0](replies)
            if coupons.UNKNOWN not in codes.values():
                break
            await self.epoch.recover(
                self.epoch.known, "a coupon pool's budget or issued count is missing from Redis"
            )
        refused = [by_id[a] for a, code in codes.items() if code is None and a in by_id]
        if refused:
            await self._record_codes(refused, "refused")
        self.codes.update({a: c if isinstance(c, str) else None for a, c in codes.items()})
        for pool, (n, budget) in left.items():
            POOL_REMAINING.labels(pool).set(n)
            POOL_BUDGET.labels(pool).set(budget)

    async def _record_codes(self, actions: list[Action], status: str) -> None:
        """`coupon-codes` records of these coupon actions, acknowledged by Kafka."""
        at = int(time.time() * 1000)
        pending = []
        for action in actions:
            pool = action["payload"]["pool"]
            if pool not in self.pools:
                continue
            code = coupons.code_for(settings, pool, self.pools[pool].prefix, action["action_id"])
            record = CouponCode(
                code=code,
                pool=pool,
                action_id=action["action_id"],
                trigger_id=action["trigger_id"],
                # a refused code is nobody's: its record, the one compaction keeps, names
                # no member (an erasure finds only the codes a member holds)
                member_id=action["member_id"] if status == "reserved" else "",
                channel=action["channel"],
                status=status,  # type: ignore[typeddict-item]
                at=at,
            )
            pending.append(
                await produce(app, self.coupon_codes, orjson.dumps(record), None, code.encode())
            )
            COUPON_RESERVATIONS.labels(pool, status).inc()
        if pending:
            await asyncio.gather(*pending)

    async def _deliver_claimed(
        self,
        actions: list[Action],
        mine: list[int],
        outcomes: list[tuple[str, str] | None],
        partition: int,
        offset: int,
    ) -> None:
        by_member: dict[str, list[int]] = {}
        for i in mine:
            by_member.setdefault(actions[i]["member_id"], []).append(i)

        async def member_in_order(member_id: str, indexes: list[int]) -> None:
            # after this member's actions of records taken earlier (records run concurrently)
            before = self.tails.get(member_id)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.tails[member_id] = done
            try:
                if before is not None:
                    await asyncio.shield(before)
                for i in indexes:
                    async with self.slots:
                        outcomes[i] = await self._one(actions[i], partition, offset)
            finally:
                done.set_result(None)
                if self.tails.get(member_id) is done:
                    del self.tails[member_id]

        await asyncio.gather(*(member_in_order(m, ix) for m, ix in by_member.items()))

    async def _one(self, action: Action, partition: int, offset: int) -> tuple[str, str]:
        try:
            return await self._deliver_claimed_one(action, partition, offset)
        except Exception as exc:  # a bug must not stop dispatch nor lose the action
            logger.exception("dispatch failed on actions[%d]@%d", partition, offset)
            await dead_letter_action(action, partition, offset, exc)
            return "failed", "internal"

    async def _deliver_claimed_one(
        self, action: Action, partition: int, offset: int
    ) -> tuple[str, str]:
        action_id = action["action_id"]
        message: dict[str, Any] = {
            "action_id": action_id,
            "trigger_id": action["trigger_id"],
            "member_id": action["member_id"],
            "kind": action["kind"],
            "channel": action["channel"],
            "event_ts": action["event_ts"],
            "fired_at": action["fired_at"],
            **action["payload"],
        }
        if action["kind"] == "coupon":
            code = self.codes.pop(action_id, None)  # issued for the batch (_issue_coupons)
            if code is None:
                await self._finish(action_id, "suppressed")
                return "suppressed", "budget"
            coupon = {
                "code": code,
                "value": action["payload"]["value"],
                "expires_at": action["payload"]["expires_at"],
            }
            message["coupon"] = coupon
            self.issued[action_id] = (action["payload"]["pool"], code)
            message["text"] = render(action["payload"].get("template", ""), {"coupon": coupon})
        if "{unsubscribe_url}" in str(message.get("text", "")):
            message["text"] = message["text"].replace(
                "{unsubscribe_url}",
                unsubscribe_url(settings, action["member_id"], action["channel"]),
            )
        outcome, reason = await self.channels.get(action["channel"]).send(
            message, keep_alive=lambda: idempotency.renew(self.redis, settings, action_id)
        )
        await self._finish(action_id, outcome)
        if outcome == "failed":
            await dead_letter(
                "actions",
                partition,
                offset,
                action_id.encode(),
                orjson.dumps(message),
                "delivery_failed",
                f"{action['channel']}: {reason}",
            )
        return outcome, reason

    async def _finish(self, action_id: str, outcome: Any) -> None:
        self.tickets[action_id] = self.marks.add(action_id, outcome)


async def dead_letter_action(action: Action, partition: int, offset: int, exc: Exception) -> None:
    """A bug must not stop dispatch nor lose the action: it goes to dead-letter, replayable."""
    await dead_letter(
        "actions",
        partition,
        offset,
        action["action_id"].encode(),
        orjson.dumps(action),
        "internal",
        f"dispatch: {type(exc).__name__} in StorePulse; see the worker log at this offset",
    )


async def deliver_record(
    dispatcher: Dispatcher, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> None:
    """One actions record end to end: each action delivered (or suppressed, or failed to
    dead-letter), and one deliveries record with every outcome."""
    try:
        items = unpack(value)
    except orjson.JSONDecodeError as exc:
        await dead_letter("actions", partition, offset, key, value, "not_decodable", f"{exc}")
        return
    actions: list[Action] = []
    for index, item in enumerate(items):
        problem = well_formed(item)
        if problem is None:
            actions.append(item)
        else:
            await dead_letter(
                "actions",
                partition,
                offset,
                key,
                value if len(items) == 1 else orjson.dumps(item),
                "not_decodable",
                problem,
                None if len(items) == 1 else index,
            )
    if not actions:
        return
    try:
        outcomes = await dispatcher.deliver_batch(actions, partition, offset)
    except Exception as exc:  # a bug must not stop dispatch nor lose the actions
        logger.exception("dispatch failed on actions[%d]@%d", partition, offset)
        for action in actions:
            await dead_letter_action(action, partition, offset, exc)
        outcomes = [("failed", "internal")] * len(actions)
    delivered_at = int(time.time() * 1000)
    deliveries: list[Delivery] = []
    for action, (outcome, reason) in zip(actions, outcomes, strict=True):
        DELIVERIES.labels(action["channel"], outcome, reason.split(" ")[0]).inc()
        if reason == "erased":
            continue  # counted; a deliveries record would name the member again
        if outcome == "sent":
            LATENCY.labels(action["channel"]).observe(
                max(0, delivered_at - action["event_ts"]) / 1000
            )
        delivery = Delivery(
            action_id=action["action_id"],
            trigger_id=action["trigger_id"],
            member_id=action["member_id"],
            channel=action["channel"],
            outcome=outcome,  # type: ignore[typeddict-item]
            reason=reason,
            event_ts=action["event_ts"],
            fired_at=action["fired_at"],
            delivered_at=delivered_at,
        )
        issued = dispatcher.issued.pop(action["action_id"], None)
        if issued is not None:
            delivery["coupon"] = {"pool": issued[0], "code": issued[1]}
        deliveries.append(delivery)
    for value in pack_chunks("deliveries", deliveries):
        await produce(app, topic_name("deliveries"), value, partition)
    returned = [
        returned_event(action, outcome, reason, delivered_at)
        for action, (outcome, reason) in zip(actions, outcomes, strict=True)
        if gives_back(action, outcome, reason)
    ]
    for value in pack_chunks("events", returned):  # the member's partition, as the actions
        await produce(app, topic_name("member-events"), value, partition)


UNCOUNTED = {"budget", "stale"}  # suppressed after firing: the member was not reached


def gives_back(action: Action, outcome: str, reason: str) -> bool:
    """Whether a send that fired but did not reach the member gives its frequency-cap slot and
    cooldown back (a duplicate does not: the first one reached them)."""
    if action["channel"] in (INTERNAL, "staff", "log"):
        return False
    return outcome == "failed" or (outcome == "suppressed" and reason.split(" ")[0] in UNCOUNTED)


def returned_event(action: Action, outcome: str, reason: str, at: int) -> dict[str, Any]:
    """The member event that gives the slot back (state.member_state.give_back)."""
    return {
        "event_id": f"returned:{action['action_id']}",
        "member_id": action["member_id"],
        "type": RETURNED,
        "ts": at,
        "source": "dispatch",
        "attrs": {
            "trigger_id": action["trigger_id"],
            "channel": action["channel"],
            "fired_at": action["fired_at"],
            "reason": f"{outcome}:{reason.split(' ')[0]}",
        },
    }


RECORDS_IN_FLIGHT = 8


@app.agent(actions_topic, name="storepulse.dispatch.send")
@supervised("dispatch")
async def dispatch_actions(stream: faust.StreamT[bytes]) -> None:
    """Up to STOREPULSE_DISPATCH_IN_FLIGHT actions records are delivered at once, each acked
    when all its actions are recorded.

    Sending one at a time let a rate-limited or slow gateway hold up the whole worker: faust feeds
    every agent of a process from one loop, which waits whenever an agent's buffer is full, so a
    push gateway at its 100/s limit stopped ingestion and trigger evaluation for every other
    member too (found by `make chaos`: all partitions stalled for 12 s at a time). Now the loop
    only waits when RECORDS_IN_FLIGHT records are in flight: their claims, coupon codes and
    deliveries records overlap, while at most STOREPULSE_DISPATCH_IN_FLIGHT actions are being
    sent (what bounds the SIGKILL window: a claimed action not yet sent is taken over after the
    claim timeout, never sent twice). With one record at a time, dispatch fell seconds behind at
    1,400 events/s (bench latency phases, p99 5-6 s). Offsets are committed only up to the oldest
    unfinished record, so a crash re-reads what was in flight, and the Redis claim keeps each
    action at most once. A member's deliveries keep their order, across records too.
    """
    dispatcher = Dispatcher()
    slots = asyncio.Semaphore(max(RECORDS_IN_FLIGHT, settings.dispatch_in_flight))
    in_flight: set[asyncio.Task[None]] = set()
    manual = cast(Any, stream).noack()  # on faust's Stream, not on its StreamT interface

    async def run(event: faust.EventT[bytes]) -> None:
        m = event.message
        try:
            await deliver_record(dispatcher, m.partition, m.offset, m.key, m.value)
        finally:
            await manual.ack(event)  # after the deliveries are recorded, never before
            slots.release()

    try:
        async for event in manual.events():
            await slots.acquire()
            task = asyncio.create_task(run(event))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    finally:  # a stopping worker lets what is in flight finish, so its outcome is recorded
        if in_flight:
            logger.info("waiting for %d action records in flight", len(in_flight))
            await asyncio.wait(set(in_flight), timeout=settings.claim_timeout_s)
