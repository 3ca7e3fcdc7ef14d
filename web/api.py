"""HTTP pages on the worker's web server: health, Prometheus metrics, member lookup."""

from __future__ import annotations

import logging
import time
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
from core.durations import moment_ms
from faust_ext.partition_watch import app_ready
from state import epoch
from state.feeds import health as store_feeds
from state.loyalty import load_loyalty
from state.member_state import DECISIONS_KEPT, StateContext
from state.members import member_state_table
from state.redis_store import RELEASE, key, redis_client, with_redis
from state.redis_store import health as redis_health
from state.stores import load_stores
from topics import AUDIT_TOPIC, TRIGGERS_TOPIC
from triggers.catalog import BOOL, EVENT_TYPES, LIST, MAP, NUMBER, TEXT, event_fields, nearest
from triggers.lifecycle import Change, LifecycleError, TriggerRecord, next_record
from triggers.live import registry
from triggers.loader import describe_errors
from triggers.model import TriggerDef
from triggers.pipeline import step
from triggers.registry import definition_doc, write_changes
from web.auth import UNAUTHORIZED, caller, principal_of, require
from web.routing import member_route

app, settings = current()
on_member_worker = member_route(app, settings, member_state_table)

logger = logging.getLogger("storepulse.web")
# faust's own counters (setup_prometheus_sensors without its page: ours checks the key when
# STOREPULSE_METRICS_PUBLIC=0)
app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(REGISTRY, "faust"))


def authorized(request: Request) -> bool:
    """Any valid key (viewer or above)."""
    return principal_of(request, settings) is not None


require_key = require(settings, "viewer")
require_editor = require(settings, "editor")


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
    data = epoch.shared(settings)
    # ready once Redis's data set is adopted (or rebuilt from Kafka) too: not while deciding
    # on a Redis that may have forgotten
    ready = assigned > 0 and app_ready(app) and registry.ready.is_set() and data.known is not None
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


@app.page("/members/{member_id}/decisions")
@require_key
@on_member_worker
async def member_decisions(self: View, request: Request, member_id: str) -> Response:
    """The member's recent decisions that mattered (fired, held out, suppressed with the reason,
    error), newest first: `?trigger=ID&since=` (epoch ms, an ISO time or a duration ago)."""
    record = member_state_table.get(member_id)
    if record is None:
        return self.json({"error": f"no member {member_id!r}"}, status=404)
    try:
        since = moment_ms(request.query.get("since"), int(time.time() * 1000)) or 0
    except ValueError as exc:
        return bad_request(self, [str(exc)], 400)
    wanted = request.query.get("trigger")
    return self.json(
        {
            "member_id": member_id,
            "kept": DECISIONS_KEPT,
            "decisions": history(record, wanted, since),
        }
    )


def history(record: Any, trigger: str | None = None, since: int = 0) -> list[dict[str, Any]]:
    out = []
    for trigger_id, verdict, reason, event_type, at in reversed(record.get("decisions") or []):
        if (trigger and trigger_id != trigger) or at < since:
            continue
        out.append(
            {
                "trigger": trigger_id,
                "verdict": verdict,
                "reason": reason,
                "event": event_type,
                "at": at,
            }
        )
    return out


@app.page("/stores/health")
@require_key
async def stores_health(self: View, request: Request) -> Response:
    """Per store and source: the last event, its age, events in the last minute, whether the
    store is open and the feed silent (no event for its `feed_silent_after` in opening hours)."""
    now = int(time.time() * 1000)
    feeds = await with_redis(
        lambda: store_feeds(
            redis_client(settings), settings, load_stores(settings.stores_path), now
        ),
        "store feed health",
    )
    return self.json({"at": now, "silent": sum(f["silent"] for f in feeds), "feeds": feeds})


@app.page("/explain/{member_id}")
class Explain(View):
    """POST an event (JSON, as on member-events: type, ts, store_id, attributes): for each
    candidate trigger, the verdict and reason, by the code the worker runs. Changes nothing."""

    @require_key
    @on_member_worker
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
        "history": history(before or {}),  # what was decided for this member before
    }


@app.page("/triggers")
class Triggers(View):
    """GET: every trigger with its status, version and author (viewer). POST: validate and
    publish one (editor): a definition, or {"definition", "status": "live"|"draft", "note",
    "expected_version"}; a new version, live on every worker within a second."""

    @require_key
    async def get(self, request: Request) -> Response:
        definitions = []
        for d in registry.definitions.values():
            doc = d.model_dump(mode="json", by_alias=True)
            doc.update(registry.meta.get(d.id, {}))
            if d.id in registry.paused:
                doc["paused"] = registry.paused[d.id]
            definitions.append(doc)
        return self.json({"version": registry.version, "triggers": definitions})

    @require_editor
    async def post(self, request: Request) -> Response:
        try:
            body = await json_body(request)
        except ValueError as exc:
            return bad_request(self, [str(exc)], 400)
        wrapped = isinstance(body, dict) and "definition" in body
        doc = body["definition"] if wrapped else body
        status = body.get("status", "live") if wrapped else "live"
        note = str(body.get("note") or "")[:500] if wrapped else ""
        if status not in ("live", "draft"):
            return bad_request(self, ["status: publish as `live` or save as `draft`"])
        try:
            definition = TriggerDef.model_validate(doc, context=registry.refs)
        except ValidationError as exc:
            return bad_request(self, describe_errors(exc, "request"))
        current = registry.record(definition.id)
        expected = body.get("expected_version") if wrapped else None
        if expected is not None and expected != (current["version"] if current else 0):
            return self.json(
                {
                    "error": f"{definition.id} is at version "
                    f"{current['version'] if current else 0}, not {expected}: someone published "
                    "in between; reload and merge"
                },
                status=409,
            )
        change: Change = "publish" if status == "live" else "draft"
        try:
            record = await change_trigger(
                definition.id, change, caller(request).name, note, definition_doc(definition)
            )
        except LifecycleError as exc:
            return self.json({"error": str(exc)}, status=409)
        return self.json(
            {"published" if change == "publish" else "saved": definition.id, **summary(record)},
            status=202,
        )


def summary(record: TriggerRecord | None) -> dict[str, Any]:
    return {k: v for k, v in (record or {}).items() if k != "definition"}


async def change_trigger(
    trigger_id: str,
    change: Change,
    author: str,
    note: str = "",
    definition: dict[str, Any] | None = None,
) -> TriggerRecord | None:
    """Apply a lifecycle change: the audit record, then the trigger's record (None: deleted).

    Two changes made from the same record (two editors on two workers, a double click) would
    both pass the status checks on their worker's view, and the later write would undo the
    earlier one (a pause of v3 hiding a v4 published a moment before). Each change therefore
    first claims the record it starts from in Redis (SET NX, CHANGE_CLAIM_S): the second gets
    LifecycleError (409) and reloads. A claim is given back when the write fails."""
    current = registry.record(trigger_id)
    at = int(time.time() * 1000)
    claim = key(settings, "trigger-change", trigger_id) + (
        f":{current['version']}:{current['at']}" if current else ":new"
    )
    token = f"{author}:{at}".encode()
    redis = redis_client(settings)
    if not await with_redis(
        lambda: redis.set(claim, token, nx=True, ex=CHANGE_CLAIM_S), "trigger change claim"
    ):
        raise LifecycleError(
            f"{trigger_id} was changed a moment ago by another request (it was at version "
            f"{current['version'] if current else 0}): reload it and try again"
        )
    try:
        record = await _write_change(trigger_id, change, author, note, definition, current, at)
    except BaseException:
        await with_redis(lambda: redis.eval(RELEASE, 1, claim, token), "trigger change claim")
        raise
    if record is None:  # a deleted draft's id may be used again at once
        new = key(settings, "trigger-change", trigger_id) + ":new"
        await with_redis(lambda: redis.delete(new), "trigger change claim")
    return record


# Longer than a change takes to reach every worker's view (a second; read-your-writes waits 5 s).
CHANGE_CLAIM_S = 30


async def _write_change(
    trigger_id: str,
    change: Change,
    author: str,
    note: str,
    definition: dict[str, Any] | None,
    current: TriggerRecord | None,
    at: int,
) -> TriggerRecord | None:
    if change == "delete":
        if current is None:
            raise LifecycleError("no such trigger")
        if current["status"] != "draft":
            raise LifecycleError(
                f"only drafts are deleted; this one is {current['status']}: archive it (its "
                "history and reports stay)"
            )
        record: TriggerRecord | None = None
    else:
        record = next_record(current, change, author, at, note, definition)
    await write_changes(
        settings.kafka(),
        TRIGGERS_TOPIC,
        AUDIT_TOPIC,
        [(trigger_id, change, record)],
        author,
        note,
        at,
    )
    # Read your writes: the next request on this worker (a pause right after a rollback, the
    # page drawn again) starts from this record, not from the one before it. Without the wait,
    # a pause a moment after a rollback paused the version before it (seen in the console test).
    if not await registry.caught_up_with(trigger_id, record):
        logger.warning("trigger %s: this worker has not seen its own change after 5 s", trigger_id)
    return record


# after /triggers and before /triggers/{id}/...: aiohttp matches routes in the order they are added
import web.console  # noqa: E402
import web.lifecycle  # noqa: E402
import web.members  # noqa: E402,F401
