"""Operations see the slice through /metrics."""

from __future__ import annotations

from infra.worker_process import metrics as scrape
from tests.integration.conftest import collect, give_consent
from tests.integration.test_delivery import until


async def test_metrics_count_events_actions_dead_letters_and_latency(
    worker, send, bootstrap, checkin_factory
):
    before = scrape(worker.web_port)
    event = checkin_factory()
    await give_consent(send, bootstrap, event["member_id"])
    await send("checkins", event)
    await send("checkins", b"nope")
    await collect(bootstrap, "deliveries", lambda d: d["member_id"] == event["member_id"])
    # the bad record may sit on another partition, in a batch after the good one's delivery
    dead_before = before.get("storepulse_dead_letters_total", 0)
    await until(
        lambda: scrape(worker.web_port).get("storepulse_dead_letters_total", 0) > dead_before,
        15,
        "the malformed record was never counted as a dead letter",
    )
    after = scrape(worker.web_port)
    assert after["storepulse_events_in_total"] - before.get("storepulse_events_in_total", 0) >= 2
    assert after["storepulse_actions_total"] > before.get("storepulse_actions_total", 0)
    assert after["storepulse_event_to_action_seconds_count"] > before.get(
        "storepulse_event_to_action_seconds_count", 0
    )
