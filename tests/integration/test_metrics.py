"""Operations see the slice through /metrics."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import collect


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def test_metrics_count_events_actions_dead_letters_and_latency(
    worker, send, bootstrap, checkin_factory
):
    before = scrape(worker.web_port)
    event = checkin_factory()
    await send("checkins", event)
    await send("checkins", b"nope")
    await collect(bootstrap, "deliveries", lambda d: d["member_id"] == event["member_id"])
    after = scrape(worker.web_port)
    assert after["storepulse_events_in_total"] - before.get("storepulse_events_in_total", 0) >= 2
    assert after["storepulse_dead_letters_total"] > before.get("storepulse_dead_letters_total", 0)
    assert after["storepulse_actions_total"] > before.get("storepulse_actions_total", 0)
    assert after["storepulse_event_to_action_seconds_count"] > before.get(
        "storepulse_event_to_action_seconds_count", 0
    )
