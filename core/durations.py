"""Durations as people write them in YAML: 90s, 30m, 2h, 1d, 1w; bounded, so that every duration
fits the state's millisecond timestamps (a 99999999999w delay overflowed the changelog's int64)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

DURATION_PATTERN = r"^\s*(\d{1,12})\s*(ms|s|m|h|d|w)\s*$"
_DURATION = re.compile(DURATION_PATTERN)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
MAX_DURATION_MS = 3660 * 86_400_000  # ten years: the longest cooldown or window that makes sense


def duration_ms(text: str) -> int:
    """`"30m"` -> 1_800_000."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 2h, 1d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def _bounded(text: str) -> str:
    if duration_ms(text) > MAX_DURATION_MS:
        raise ValueError(f"{text.strip()!r} is longer than the longest duration allowed, 3660d")
    return text


Duration = Annotated[
    str, Field(pattern=DURATION_PATTERN, examples=["30m", "1d"]), AfterValidator(_bounded)
]


def moment_ms(text: str | None, now_ms: int) -> int | None:
    """A point in time as people give it on a command line or in a query: epoch ms, an ISO time
    (UTC unless it says otherwise), or a duration ago (`7d`, `12h`); None for nothing given."""
    from datetime import UTC, datetime

    if not text:
        return None
    if text.isdigit():
        return int(text)
    if _DURATION.match(text):
        return now_ms - duration_ms(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text[:40]!r} is neither epoch ms, an ISO time nor a duration ago (7d)"
        ) from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)
