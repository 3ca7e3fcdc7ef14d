"""Durations as people write them in YAML: 90s, 30m, 2h, 1d, 1w."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

DURATION_PATTERN = r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$"
_DURATION = re.compile(DURATION_PATTERN)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, examples=["30m", "1d"])]


def duration_ms(text: str) -> int:
    """`"30m"` -> 1_800_000."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 2h, 1d")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]
