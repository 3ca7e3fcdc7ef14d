"""Operations on real parts: store feed health on a live worker; alert rules with promtool; every
dashboard and alert expression parsed by a real Prometheus that scrapes the worker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.integration.conftest import http
from tests.integration.test_ingestion import ev, uid


def feed(port: int, store: str, source: str) -> dict[str, Any]:
    status, body = http(port, "GET", "/stores/health")
    assert status == 200, body
    (found,) = [f for f in body["feeds"] if (f["store"], f["source"]) == (store, source)]
    return dict(found)


async def test_a_store_whose_beacons_stop_in_opening_hours_is_silent(worker, send):
    for _ in range(3):
        e = ev(
            "ranging",
            store_id="test-feeds",
            beacon_id="b-feeds-cos",
            rssi=-60,
            app_device_id=uid("dev"),
        )
        await send("beacons", e, key=e["app_device_id"].encode())
    deadline = time.monotonic() + 15
    while (now := feed(worker.web_port, "test-feeds", "beacons"))["last_event_at"] is None:
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.3)
    assert now["open"] and not now["silent"] and now["age_s"] < 3
    await asyncio.sleep(4)
    later = feed(worker.web_port, "test-feeds", "beacons")
    assert later["silent"] and later["age_s"] >= 3
