"""HTTP pages on the worker's web server: health, Prometheus metrics, member lookup."""

from __future__ import annotations

import hmac

from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View

from app import app, settings
from state.members import member_state_table, member_timers_table

setup_prometheus_sensors(app, pattern="/metrics", name_prefix="faust")


def authorized(request: Request) -> bool:
    """`Authorization: Bearer <STOREPULSE_API_TOKEN>`; compared in constant time."""
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(token, settings.api_token)


@app.page("/health")
async def health(self: View, request: Request) -> Response:
    """`ready` once this worker owns partitions and no rebalance is under way."""
    assigned = len(app.consumer.assignment()) if app.consumer else 0
    ready = assigned > 0 and not app.rebalancing and app.tables.recovery.completed.is_set()
    return self.json({"status": "ok", "ready": ready, "assigned_partitions": assigned})


@app.page("/members/{member_id}")
@app.table_route(table=member_state_table, match_info="member_id")
async def member_lookup(self: View, request: Request, member_id: str) -> Response:
    """The member's state, answered by the worker that owns the member's partition."""
    if not authorized(request):
        return self.json(
            {"error": "missing or wrong token (Authorization: Bearer ...)"}, status=401
        )
    record = member_state_table.get(member_id)
    if record is None:
        return self.json({"error": f"no member {member_id!r}"}, status=404)
    timers = member_timers_table.get(member_id)
    return self.json({"member": record, "next_due": timers["due"] if timers else None})
