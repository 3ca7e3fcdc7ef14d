"""Dispatcher: sends each action at most once (Redis SET NX on its id) and records the outcome."""

from __future__ import annotations

import asyncio
import logging
import time

import faust
from redis.exceptions import RedisError

from app import app, settings
from channels.log_channel import channel_for
from metrics import DELIVERIES, LATENCY, REDIS_UP
from state.redis_store import key, redis_client
from topics import Action, Delivery, actions_topic, deliveries_topic

logger = logging.getLogger("storepulse.dispatch")


async def claim(action_id: str) -> bool:
    """True for the first claim of an action id; waits while Redis is away (never guesses)."""
    delay = 0.1
    while True:
        try:
            ok = await redis_client(settings).set(
                key(settings, "act", action_id), b"1", nx=True, ex=settings.idempotency_ttl_s
            )
            REDIS_UP.set(1)
            return bool(ok)
        except RedisError as exc:
            REDIS_UP.set(0)
            logger.warning("Redis unavailable while claiming an action (%r); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@app.agent(actions_topic, name="storepulse.dispatch.send")
async def dispatch_actions(stream: faust.StreamT[Action]) -> None:
    async for action in stream:
        if await claim(action.action_id):
            outcome, reason = await channel_for(action.channel).send(action)
        else:
            outcome, reason = "suppressed", "duplicate"
        delivered_at = int(time.time() * 1000)
        DELIVERIES.labels(action.channel, outcome, reason).inc()
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
