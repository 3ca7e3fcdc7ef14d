"""HTTP pages on the worker's web server: health and Prometheus metrics."""

from __future__ import annotations

from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View

from app import app

setup_prometheus_sensors(app, pattern="/metrics", name_prefix="faust")


@app.page("/health")
async def health(self: View, request: Request) -> Response:
    """`ready` once this worker owns partitions and no rebalance is under way."""
    assigned = len(app.consumer.assignment()) if app.consumer else 0
    ready = assigned > 0 and not app.rebalancing and app.agents.started
    return self.json({"status": "ok", "ready": ready, "assigned_partitions": assigned})
