"""Timer task: turns due schedule entries into `timer` events on member-events.

Table writes must happen inside the stream that owns the partition, so the timer does not touch
member state itself: it sends `timer` events to the member's partition (one record per partition
per tick), and the member agent advances that member's clock. A lost tick is harmless: the
persisted due time survives and is rebuilt.
"""

from __future__ import annotations

import logging
import time

from app import current
from contracts.batches import pack_chunks
from core.metrics import TIMERS_FIRED, TIMERS_PENDING
from faust_ext.batch_io import produce
from faust_ext.partition_watch import app_ready
from state.members import member_timers_table
from state.timers import clock, partition_of, schedule
from topics import topic_name

app, settings = current()

logger = logging.getLogger("storepulse.timers")


def _ready() -> frozenset[object] | None:
    """The current assignment once the app is not rebalancing and tables are recovered."""
    if not app_ready(app) or app.consumer is None:
        return None
    return frozenset(app.consumer.assignment())


@app.timer(interval=settings.timer_interval_s)
async def fire_due_timers() -> None:
    assignment = _ready()
    if assignment is None:
        return
    if schedule.built_for != assignment:
        rows = (
            (k, int(v["due"]), partition_of(k, settings.partitions))
            for k, v in member_timers_table.items()
            if v
        )
        count = schedule.rebuild(rows, assignment)
        logger.info("timer schedule rebuilt: %d members with something due", count)
    wall = int(time.time() * 1000)
    ticks: dict[int, list[dict[str, object]]] = {}
    for member_id, due, partition in schedule.pop_due(
        lambda partition: clock.now(wall, partition), settings.timer_max_per_tick
    ):
        ticks.setdefault(partition, []).append(
            {
                "event_id": f"timer:{member_id}:{due}",
                "member_id": member_id,
                "type": "timer",
                "ts": clock.now(wall, partition),
                "source": "timer",
            }
        )
    for partition, events in ticks.items():  # one record per partition per tick
        for value in pack_chunks("events", events):
            await produce(app, topic_name("member-events"), value, partition)
        TIMERS_FIRED.inc(len(events))
    TIMERS_PENDING.set(len(schedule))
