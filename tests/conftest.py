"""Shared fixtures: event factories. Integration fixtures are in tests/integration/conftest.py."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def checkin_factory() -> Callable[..., dict[str, Any]]:
    def make(**overrides: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": str(uuid.uuid4()),
            "ts": now_ms(),
            "kind": "checkin",
            "store_id": "sh-jingan",
            "member_id": f"m-{uuid.uuid4().hex[:10]}",
            "channel": "app",
        }
        event.update(overrides)
        return {k: v for k, v in event.items() if v is not None}

    return make
