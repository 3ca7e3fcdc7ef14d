"""The webhook channel: HTTP POST of the action as JSON, signed, rate-limited, retried with
exponential backoff and jitter, behind a circuit breaker. SMS gateways, app push, WeChat template
messages and store-staff alerts are all webhook targets in config/channels.yaml."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from channels.base import Outcome
from channels.config import ChannelConfig
from core.metrics import CIRCUIT_STATE, DELIVERY_RETRIES

logger = logging.getLogger("storepulse.webhook")
SIGNATURE_HEADER = "X-StorePulse-Signature"


class RateLimiter:
    """Token bucket: at most `rate` sends per second, with bursts of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate, self.tokens, self.at = rate, rate, time.monotonic()
        # Waiters queue here, first come first served, and only the first sleeps on the bucket:
        # with hundreds of deliveries in flight, each sleeping and re-checking woke them all for
        # every token (tens of thousands of wake-ups a second at a 100/s limit).
        self._turn = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._turn:
            while True:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
                self.at = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


class CircuitBreaker:
    """Opens after `failures` in a row; after `reset_s` lets one attempt through (half-open)."""

    def __init__(self, name: str, failures: int, reset_s: float) -> None:
        self.name, self.limit, self.reset_s = name, failures, reset_s
        self.failures, self.opened_at = 0, 0.0

    @property
    def state(self) -> str:
        if self.failures < self.limit:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.reset_s else "open"

    async def wait_until_allowed(self) -> None:
        while self.state == "open":
            await asyncio.sleep(min(1.0, self.reset_s))

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
        else:
            self.failures += 1
            if self.failures >= self.limit:
                self.opened_at = time.monotonic()
        CIRCUIT_STATE.labels(self.name).set({"closed": 0, "half_open": 0.5, "open": 1}[self.state])


TOLERANCE_S = 300  # receivers refuse a signed request older (or newer) than this


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """Stripe's scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, so that a
    captured request cannot be replayed after TOLERANCE_S."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes, header: str, body: bytes, now: float, tolerance: float = TOLERANCE_S
) -> str | None:
    """What is wrong with a request's signature header, or None when it is genuine and fresh.
    For receivers; compares in constant time."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return "no timestamp"
    if abs(now - timestamp) > tolerance:
        return "too old"
    expected = signature(secret, body, timestamp).split(",v1=", 1)[1]
    if not hmac.compare_digest(expected.encode(), parts.get("v1", "").encode()):
        return "bad signature"
    return None


class WebhookChannel:
    def __init__(
        self, name: str, config: ChannelConfig, on_wait: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.name, self.config = name, config
        self.limiter = RateLimiter(config.rate_per_s)
        self.breaker = CircuitBreaker(
            name, config.breaker_failures, config.ms("breaker_reset") / 1000
        )
        self._session: aiohttp.ClientSession | None = None
        self._secret = config.secret()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.config.ms("timeout") / 1000)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def send(
        self, message: dict[str, Any], keep_alive: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[Outcome, str]:
        """Deliver; retry what may succeed later (5xx, 429, timeouts, refused connections)."""
        body = orjson.dumps(message)
        headers = {
            "Content-Type": "application/json",
            "X-Idempotency-Key": str(message["action_id"]),
        }
        delay = self.config.ms("backoff") / 1000
        attempts = self.config.retries + 1
        reason = "not sent"
        for attempt in range(attempts):
            await self.breaker.wait_until_allowed()  # an open circuit costs no attempt
            await self.limiter.acquire()
            headers[SIGNATURE_HEADER] = signature(self._secret, body, int(time.time()))
            try:
                async with self.session().post(
                    self.config.url or "", data=body, headers=headers
                ) as resp:
                    status = resp.status
                    await resp.read()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                status, reason = 0, f"{type(exc).__name__}"
            if 200 <= status < 300:
                self.breaker.record(True)
                return "sent", "ok"
            if status:
                reason = f"http_{status}"
            retryable = status == 0 or status == 429 or status >= 500
            self.breaker.record(not retryable)  # a 4xx is our problem, not the gateway's
            if not retryable:
                return "failed", reason
            if attempt + 1 < attempts:
                DELIVERY_RETRIES.labels(self.name).inc()
                if keep_alive:
                    await keep_alive()
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.config.ms("max_backoff") / 1000)
        return "failed", f"{reason} after {attempts} attempts"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
