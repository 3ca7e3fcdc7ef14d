"""HTTP pages on the worker's web server: health, Prometheus metrics, member lookup."""

from __future__ import annotations

import hmac
import time
from typing import Any

import orjson
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.web import Request, Response, View
from pydantic import ValidationError

from agents.watch import watch
from app import app, settings
from state.loyalty import load_loyalty
from state.member_state import StateContext
from state.members import member_state_table, member_timers_table
from state.redis_store import health as redis_health
from state.stores import load_stores
from topics import TRIGGERS_TOPIC
from triggers.loader import describe_errors
from triggers.model import TriggerDef
from triggers.pipeline import step
from triggers.registry import publish, registry

setup_prometheus_sensors(app, pattern="/metrics", name_prefix="faust")


UNAUTHORIZED = {"error": "missing or wrong token (Authorization: Bearer ...)"}


def authorized(request: Request) -> bool:
    """`Authorization: Bearer <STOREPULSE_API_TOKEN>`; compared in constant time."""
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(token, settings.api_token)


@app.page("/health")
async def health(self: View, request: Request) -> Response:
    """`ready` once this worker owns partitions and no rebalance is under way."""
    assigned = len(app.consumer.assignment()) if app.consumer else 0
    ready = (
        assigned > 0
        and not app.rebalancing
        and app.tables.recovery.completed.is_set()
        and registry.ready.is_set()
    )
    stalled = [f"{tp.topic}[{tp.partition}]" for tp in watch.stalled]
    status = "degraded" if redis_health["redis"] == "down" else "ok"
    if stalled:
        status = "stalled"
    body: dict[str, Any] = {
        "status": status,
        "ready": ready,
        "assigned_partitions": assigned,
        "redis": redis_health["redis"],
        "stalled_partitions": stalled,
    }
    if request.query.get("partitions") and authorized(request):
        body["partitions"] = await watch.report()
    return self.json(body)


@app.page("/members/{member_id}")
@app.table_route(table=member_state_table, match_info="member_id")
async def member_lookup(self: View, request: Request, member_id: str) -> Response:
    """The member's state, answered by the worker that owns the member's partition."""
    if not authorized(request):
        return self.json(UNAUTHORIZED, status=401)
    record = member_state_table.get(member_id)
    if record is None:
        return self.json({"error": f"no member {member_id!r}"}, status=404)
    timers = member_timers_table.get(member_id)
    return self.json({"member": record, "next_due": timers["due"] if timers else None})


@app.page("/explain/{member_id}")
class Explain(View):
    """POST an event (JSON, as on member-events: type, ts, store_id, attributes): for each
    candidate trigger, the verdict and reason, by the code the worker runs. Changes nothing."""

    @app.table_route(table=member_state_table, match_info="member_id")
    async def post(self, request: Request, member_id: str) -> Response:
        if not authorized(request):
            return self.json(UNAUTHORIZED, status=401)
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict) or not isinstance(body.get("type"), str):
                raise ValueError("expected a JSON object with at least `type`")
        except ValueError as exc:
            return self.json({"error": f"bad event: {exc}"}, status=400)
        return self.json(explain_event(member_id, body))


def explain_event(member_id: str, body: dict[str, Any]) -> dict[str, Any]:
    now = int(time.time() * 1000)
    event = {"event_id": "explain", "ts": now, **body, "member_id": member_id}
    triggers = registry.current()
    ctx = StateContext(
        load_stores(settings.stores_path),
        load_loyalty(settings.loyalty_path),
        triggers.dwell_thresholds_ms(),
    )
    before = member_state_table.get(member_id)
    # on a copy: the table is not written; every candidate trigger says why it did not fire
    result = step(before, event, triggers, ctx, now, explain=True)
    return {
        "member_id": member_id,
        "known_member": before is not None,
        "decisions": [
            {"event": ev["type"], "trigger": d.trigger_id, "verdict": d.verdict, "reason": d.reason}
            for ev, d in result.decisions
        ],
        "pending": sorted(
            {**(result.record.get("pending") or {}), **(result.record.get("armed") or {})}
        ),
    }


@app.page("/triggers")
class Triggers(View):
    """GET: the definitions this worker evaluates now. POST: validate and publish one (JSON);
    every worker applies it within a second."""

    async def get(self, request: Request) -> Response:
        if not authorized(request):
            return self.json(UNAUTHORIZED, status=401)
        definitions = [
            d.model_dump(mode="json", by_alias=True) for d in registry.definitions.values()
        ]
        return self.json({"version": registry.version, "triggers": definitions})

    async def post(self, request: Request) -> Response:
        if not authorized(request):
            return self.json(UNAUTHORIZED, status=401)
        try:
            definition = TriggerDef.model_validate(orjson.loads(await request.read()))
        except ValidationError as exc:
            return self.json({"errors": describe_errors(exc, "request")}, status=422)
        except orjson.JSONDecodeError as exc:
            return self.json({"errors": [f"request: not JSON: {exc}"]}, status=400)
        await publish(settings.kafka_bootstrap, TRIGGERS_TOPIC, [definition])
        return self.json({"published": definition.id}, status=202)
