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
from typing import Any, cast

import faust
import orjson

from agents.supervisor import supervised
from app import current
from channels.config import load_channels
from channels.registry import Channels
from core.metrics import DELIVERIES, LATENCY, POOL_REMAINING
from edge.dead_letters import dead_letter
from state import coupons, idempotency
from state.redis_store import redis_client, with_redis
from topics import Action, Delivery, actions_topic, deliveries_topic
from triggers.actions import INTERNAL, render

app, settings = current()

logger = logging.getLogger("storepulse.dispatch")


class Dispatcher:
    def __init__(self) -> None:
        self.redis = redis_client(settings)
        self.channels = Channels(load_channels(settings.channels_path))
        self.pools = coupons.load_pools(settings.coupons_path)
        self.budgets_set = False

    async def deliver(self, action: Action, partition: int, offset: int) -> tuple[str, str]:
        if not self.budgets_set:
            await with_redis(
                lambda: coupons.ensure_budgets(self.redis, settings, self.pools), "coupon budgets"
            )
            self.budgets_set = True
        if action.channel == INTERNAL:
            return "sent", "applied"  # points and tags took effect in member state already
        deliver_by = action.payload.get("deliver_by")
        if deliver_by and time.time() * 1000 > deliver_by:
            return "suppressed", "stale"  # e.g. a backlog after an outage: not yesterday's hello
        if (
            await with_redis(
                lambda: idempotency.claim(
                    self.redis, settings, action.action_id, int(settings.claim_timeout_s * 1000)
                ),
                "idempotency claim",
            )
            == "done"
        ):
            return "suppressed", "duplicate"
        holding = asyncio.create_task(
            idempotency.hold(
                self.redis, settings, action.action_id, int(settings.claim_timeout_s * 1000)
            )
        )
        try:
            return await self._deliver_claimed(action, partition, offset)
        finally:
            holding.cancel()

    async def _deliver_claimed(
        self, action: Action, partition: int, offset: int
    ) -> tuple[str, str]:
        message: dict[str, Any] = {
            "action_id": action.action_id,
            "trigger_id": action.trigger_id,
            "member_id": action.member_id,
            "kind": action.kind,
            "channel": action.channel,
            "event_ts": action.event_ts,
            "fired_at": action.fired_at,
            **action.payload,
        }
        if action.kind == "coupon":
            pool = action.payload["pool"]
            code = await with_redis(
                lambda: coupons.issue(self.redis, settings, self.pools, pool, action.action_id),
                "coupon pool",
            )
            left = await with_redis(
                lambda: coupons.remaining(self.redis, settings, pool), "coupon pool"
            )
            POOL_REMAINING.labels(pool).set(left)
            if code is None:
                await self._finish(action.action_id, "suppressed")
                return "suppressed", "budget"
            coupon = {
                "code": code,
                "value": action.payload["value"],
                "expires_at": action.payload["expires_at"],
            }
            message["coupon"] = coupon
            message["text"] = render(action.payload.get("template", ""), {"coupon": coupon})
        outcome, reason = await self.channels.get(action.channel).send(
            message, keep_alive=lambda: idempotency.renew(self.redis, settings, action.action_id)
        )
        await self._finish(action.action_id, outcome)
        if outcome == "failed":
            await dead_letter(
                "actions",
                partition,
                offset,
                action.action_id.encode(),
                orjson.dumps(message),
                "delivery_failed",
                f"{action.channel}: {reason}",
            )
        return outcome, reason

    async def _finish(self, action_id: str, outcome: Any) -> None:
        await with_redis(
            lambda: idempotency.finish(self.redis, settings, action_id, outcome), "idempotency mark"
        )


async def deliver_and_record(dispatcher: Dispatcher, event: faust.EventT[Action]) -> None:
    """One action end to end: delivered (or suppressed, or failed to dead-letter) and recorded."""
    action = cast(Action, event.value)
    partition, offset = event.message.partition, event.message.offset
    try:
        outcome, reason = await dispatcher.deliver(action, partition, offset)
    except Exception as exc:  # a bug must not stop dispatch nor lose the action
        logger.exception("dispatch failed on actions[%d]@%d", partition, offset)
        await dead_letter(
            "actions",
            partition,
            offset,
            action.action_id.encode(),
            orjson.dumps(action.to_representation()),
            "internal",
            f"dispatch: {type(exc).__name__} in StorePulse; see the worker log at this offset",
        )
        outcome, reason = "failed", "internal"
    delivered_at = int(time.time() * 1000)
    DELIVERIES.labels(action.channel, outcome, reason.split(" ")[0]).inc()
    if outcome == "sent":
        LATENCY.labels(action.channel).observe(max(0, delivered_at - action.event_ts) / 1000)
    await deliveries_topic.send(
        key=action.member_id,
        value=Delivery(
            action_id=action.action_id,
            trigger_id=action.trigger_id,
            member_id=action.member_id,
            channel=action.channel,
            outcome=outcome,
            reason=reason,
            event_ts=action.event_ts,
            fired_at=action.fired_at,
            delivered_at=delivered_at,
        ),
    )


@app.agent(actions_topic, name="storepulse.dispatch.send")
@supervised("dispatch")
async def dispatch_actions(stream: faust.StreamT[Action]) -> None:
    """Up to STOREPULSE_DISPATCH_IN_FLIGHT actions are delivered at once, each acked when done.

    Sending one at a time let a rate-limited or slow gateway hold up the whole worker: faust feeds
    every agent of a process from one loop, which waits whenever an agent's buffer is full, so a
    push gateway at its 100/s limit stopped ingestion and trigger evaluation for every other
    member too (found by `make chaos`: all partitions stalled for 12 s at a time). Now the loop
    only waits when that many deliveries are in flight. Offsets are committed only up to the
    oldest unfinished action, so a crash re-reads what was in flight, and the Redis claim keeps
    each one at most once. Deliveries to one member may finish out of order.
    """
    dispatcher = Dispatcher()
    slots = asyncio.Semaphore(settings.dispatch_in_flight)
    in_flight: set[asyncio.Task[None]] = set()
    manual = cast(Any, stream).noack()  # on faust's Stream, not on its StreamT interface

    async def run(event: faust.EventT[Action]) -> None:
        try:
            await deliver_and_record(dispatcher, event)
        finally:
            await manual.ack(event)  # after the delivery is recorded, never before
            slots.release()

    try:
        async for event in manual.events():
            await slots.acquire()
            task = asyncio.create_task(run(event))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    finally:  # a stopping worker lets what is in flight finish, so its outcome is recorded
        if in_flight:
            logger.info("waiting for %d deliveries in flight", len(in_flight))
            await asyncio.wait(set(in_flight), timeout=settings.claim_timeout_s)
