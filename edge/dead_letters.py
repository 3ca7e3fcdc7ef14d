"""Sending a record StorePulse cannot accept to `dead-letter`: counted, logged, never lost."""

from __future__ import annotations

import base64
import logging
import time

from core.metrics import DEAD_LETTERS
from edge.validation import redact, redact_text

logger = logging.getLogger("storepulse.dead_letters")


class LogThrottle:
    """At most `burst` lines per (topic, reason) per `window_s`, then one line saying how many
    more there were: a sensor sending garbage at full rate must not turn the worker into a log
    writer (each record is still counted and dead-lettered with its reason)."""

    def __init__(self, burst: int = 10, window_s: float = 10.0) -> None:
        self.burst, self.window_s = burst, window_s
        self.windows: dict[tuple[str, str], tuple[float, int]] = {}

    def allow(self, topic: str, reason: str, now: float) -> bool:
        started, count = self.windows.get((topic, reason), (now, 0))
        if now - started >= self.window_s:
            if count > self.burst:
                logger.warning(
                    "%d more dead letters from %s for %s in %.0f s (not logged one by one; see "
                    "the dead-letter topic and storepulse_dead_letters_total)",
                    count - self.burst,
                    topic,
                    reason,
                    now - started,
                )
            started, count = now, 0
        self.windows[(topic, reason)] = (started, count + 1)
        return count < self.burst


throttle = LogThrottle()


async def dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    message: str,
    index: int | None = None,
) -> None:
    """`topic` is the short StorePulse name (metric label); the record names the Kafka topic.
    `index`: the event's position in a batch envelope, whose own bytes `value` then is."""
    from app import current
    from topics import DeadLetter, dead_letter_topic, topic_name  # topics need the built App

    _, settings = current()
    DEAD_LETTERS.labels(topic, reason).inc()
    message = redact_text(message, settings.hash_secret)
    if throttle.allow(topic, reason, time.monotonic()):
        at = f"{offset}" if index is None else f"{offset}#{index}"
        logger.warning("dead-letter %s[%d]@%s %s: %s", topic, partition, at, reason, message)
    safe_value, value_redacted = redact(value, settings.hash_secret)
    safe_key, key_redacted = redact(key, settings.hash_secret)
    await dead_letter_topic.send(
        key=f"{topic}:{partition}:{offset}" + (f":{index}" if index is not None else ""),
        value=DeadLetter(
            source_topic=topic_name(topic),
            partition=partition,
            offset=offset,
            key_b64=base64.b64encode(safe_key).decode() if safe_key is not None else None,
            value_b64=base64.b64encode(safe_value or b"").decode(),
            reason=reason,
            message=message,
            at=int(time.time() * 1000),
            redacted=value_redacted or key_redacted,
            index=index,
        ),
    )
