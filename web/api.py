"""HTTP pages on the worker's web server: health, Prometheus metrics, member lookup."""

from __future__ import annotations

import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
from aiohttp.web import Response as HttpResponse
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError

from agents.supervisor import supervisor
from agents.watch import watch
from app import current
from faust_ext.partition_watch import app_ready
from state import epoch
from state.loyalty import load_loyalty
from state.member_state import StateContext
from state.members import member_state_table, member_timers_table
from state.redis_store import health as redis_health
from state.stores import load_stores
from topics import TRIGGERS_TOPIC
from triggers.catalog import BOOL, EVENT_TYPES, LIST, MAP, NUMBER, TEXT, event_fields, nearest
from triggers.live import registry
from triggers.loader import describe_errors
from triggers.model import TriggerDef
from triggers.pipeline import step
from triggers.registry import publish

app, settings = current()

logger = logging.getLogger("storepulse.web")
# faust's own counters (setup_prometheus_sensors without its page: ours checks the key when
# STOREPULSE_METRICS_PUBLIC=0)
app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(REGISTRY, "faust"))


UNAUTHORIZED = {"error": "missing or wrong API key (send the header Authorization: Bearer KEY)"}
Handler = Callable[..., Awaitable[Response]]


def authorized(request: Request) -> bool:
    """`Authorization: Bearer <STOREPULSE_API_TOKEN>`; compared in constant time, as bytes (a
    non-ASCII header is simply wrong, not an error)."""
    header = request.headers.get("Authorization", "")
    token = header.removeprefix("Bearer ").strip()
    return bool(token) and hmac.compare_digest(
        token.encode("utf-8", "surrogateescape"), settings.api_token.encode()
    )


def require_key(handler: Handler) -> Handler:
    """Refuse the request with 401 before anything else runs, forwarding to another worker
    included (put it above `app.table_route`)."""

    @functools.wraps(handler)
    async def checked(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not authorized(request):
            return view.json(UNAUTHORIZED, status=401)
        return await handler(view, request, *args, **kwargs)

    return checked


def bad_request(view: View, errors: list[str], status: int = 422) -> Response:
    return view.json({"errors": errors}, status=status)


async def json_body(request: Request) -> Any:
    """The body as JSON; ValueError (with a message for a person) when it is not."""
    raw = await request.read()
    if not raw:
        raise ValueError("request: the body is empty; send JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"request: not JSON: {exc}") from None


@app.page("/health")
async def health(self: View, request: Request) -> Response:
    """Liveness without a key (`status`, `ready`); with the API key also partitions, Redis,
    stalls and agents. `ready` once this worker owns partitions and no rebalance is under way."""
    assigned = len(app.consumer.assignment()) if app.consumer else 0
    ready = assigned > 0 and app_ready(app) and registry.ready.is_set()
    stalled = [f"{tp.topic}[{tp.partition}]" for tp in watch.stalled]
    crashing = supervisor.crashing()
    rebuilding = redis_health.get("epoch") in ("checking", "rebuilding")
    status = "degraded" if redis_health["redis"] == "down" or rebuilding else "ok"
    if stalled:
        status = "stalled"
    if crashing:
        status = "crashing"
    body: dict[str, Any] = {"status": status, "ready": ready}
    if not authorized(request):
        return self.json(body)
    body.update(
        assigned_partitions=assigned,
        redis=redis_health["redis"],
        redis_data=epoch.shared(settings).state()
        | {"status": redis_health.get("epoch", "unknown")},
        stalled_partitions=stalled,
        agents=supervisor.report(),
        paused_triggers=sorted(registry.paused),
    )
    if request.query.get("partitions"):
        body["partitions"] = await watch.report()
    return self.json(body)


@app.page("/metrics")
async def metrics_page(self: View, request: Request) -> Response:
    """Prometheus text format: StorePulse's metrics and faust's."""
    if not settings.metrics_public and not authorized(request):
        return self.json(UNAUTHORIZED, status=401)
    headers = {"Content-Type": CONTENT_TYPE_LATEST}  # carries a charset: not `content_type=`
    return cast(Response, HttpResponse(body=generate_latest(REGISTRY), headers=headers))


@app.page("/members/{member_id}")
@require_key
@app.table_route(table=member_state_table, match_info="member_id")
async def member_lookup(self: View, request: Request, member_id: str) -> Response:
    """The member's state, answered by the worker that owns the member's partition."""
    record = member_state_table.get(member_id)
    if record is None:
        return self.json({"error": f"no member {member_id!r}"}, status=404)
    timers = member_timers_table.get(member_id)
    return self.json({"member": record, "next_due": timers["due"] if timers else None})


@app.page("/explain/{member_id}")
class Explain(View):
    """POST an event (JSON, as on member-events: type, ts, store_id, attributes): for each
    candidate trigger, the verdict and reason, by the code the worker runs. Changes nothing."""

    @require_key
    @app.table_route(table=member_state_table, match_info="member_id")  # type: ignore[arg-type]
    async def post(self, request: Request, member_id: str) -> Response:
        try:
            body = await json_body(request)
        except ValueError as exc:
            return bad_request(self, [str(exc)], 400)
        now = int(time.time() * 1000)
        errors = explain_errors(body, now)
        if errors:
            return bad_request(self, errors)
        try:
            return self.json(explain_event(member_id, body, now))
        except Exception as exc:  # the fold refused this hypothetical event: say so, not 500
            logger.warning("explain could not evaluate %r: %r", body.get("type"), exc)
            return bad_request(self, [f"event: cannot be evaluated ({type(exc).__name__})"])


_KIND_CHECKS: dict[str, tuple[type, ...]] = {
    NUMBER: (int, float),
    TEXT: (str,),
    BOOL: (bool,),
    LIST: (list,),
    MAP: (dict,),
}


def explain_errors(body: Any, now: int) -> list[str]:
    """What is wrong with a POSTed /explain event, field by field (empty: nothing)."""
    if not isinstance(body, dict):
        return [f"request: expected a JSON object (an event), got {type(body).__name__}"]
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        return [
            f"type: {str(kind)[:40]!r} is not an event type{nearest(str(kind), EVENT_TYPES)}; "
            f"one of {', '.join(sorted(EVENT_TYPES))}"
        ]
    errors = []
    known = event_fields([kind])
    for name, value in body.items():
        spec = known.get(name)
        expected = _KIND_CHECKS.get(spec if isinstance(spec, str) else MAP)
        if spec is None or expected is None or value is None:
            continue
        wrong_bool = isinstance(value, bool) and bool not in expected
        if wrong_bool or not isinstance(value, expected):
            errors.append(f"{name}: expected {spec}, got {type(value).__name__}")
    ts = body.get("ts")
    if isinstance(ts, int | float) and not 0 < ts < now + 366 * 86_400_000:
        errors.append("ts: epoch milliseconds within a year from now")
    return errors


def explain_event(member_id: str, body: dict[str, Any], now: int) -> dict[str, Any]:
    event = {"event_id": "explain", "ts": now, "receipt_id": "explain", **body}
    event["member_id"] = member_id
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

    @require_key
    async def get(self, request: Request) -> Response:
        definitions = []
        for d in registry.definitions.values():
            doc = d.model_dump(mode="json", by_alias=True)
            if d.id in registry.paused:
                doc["paused"] = registry.paused[d.id]
            definitions.append(doc)
        return self.json({"version": registry.version, "triggers": definitions})

    @require_key
    async def post(self, request: Request) -> Response:
        try:
            definition = TriggerDef.model_validate(await json_body(request), context=registry.refs)
        except ValidationError as exc:
            return bad_request(self, describe_errors(exc, "request"))
        except ValueError as exc:
            return bad_request(self, [str(exc)], 400)
        await publish(settings.kafka(), TRIGGERS_TOPIC, [definition])
        return self.json({"published": definition.id}, status=202)
