"""The marketing console at /console: static files served by any worker, and the few read-only
routes it needs beside the API (who am I, what can a condition name, validation with the YAML
of a definition, the report of every trigger, identifier look-up, recent dead letters).

The console adds no logic of its own: it calls these routes and those of web/api.py,
web/lifecycle.py and web/members.py with the key the user signs in with, so what a role may do
is decided by the API (a viewer's browser gets 403 from it, whatever the page shows).
"""

from __future__ import annotations

import base64
import mimetypes
import time
from pathlib import Path
from typing import Any

import orjson
from aiohttp.web import Response as HttpResponse
from faust.web import Request, Response, View

from app import current
from state.identity import identifiers_of
from state.redis_store import as_bytes, key, redis_client, with_redis
from state.stores import load_stores
from topics import topic_name
from triggers.catalog import EVENT_FIELDS, MEMBER_FIELDS, NOW_FIELDS, STORE_FIELDS, event_fields
from triggers.live import registry
from web.auth import caller, require
from web.lifecycle import BACKTEST_TIMEOUT_S, _child

app, settings = current()

STATIC = Path(__file__).parent / "console"
require_viewer = require(settings, "viewer")
_reports: dict[str, tuple[float, Any]] = {}  # ?from= -> (when, report): 10 s of reuse
REPORT_REUSE_S = 10.0


def _file(path: Path) -> Response:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Content-Type": kind, "Cache-Control": "no-cache"}
    return HttpResponse(body=path.read_bytes(), headers=headers)  # type: ignore[return-value]


@app.page("/console")
class Console(View):
    """The console's page (no key: it holds no data; the user signs in with theirs)."""

    async def get(self, request: Request) -> Response:
        return _file(STATIC / "index.html")


@app.page("/console/{name}")
class ConsoleAsset(View):
    """The console's scripts, styles and its charting library (web/console/, vendor/ filled
    by `make setup` from the npm registry): nothing is loaded from the internet."""

    async def get(self, request: Request, name: str) -> Response:
        found = {p.name: p for p in (*STATIC.glob("*.*"), *(STATIC / "vendor").glob("*.js"))}
        path = found.get(name)
        if path is None or path.name == "index.html":
            return self.json({"error": f"no console file {name!r}"}, status=404)
        return _file(path)


@app.page("/auth/me")
class Me(View):
    """The caller's key name and role: what the console shows and hides."""

    @require_viewer
    async def get(self, request: Request) -> Response:
        who = caller(request)
        return self.json({"name": who.name, "role": who.role})


@app.page("/catalog")
class Catalog(View):
    """What a condition may name: event types with their fields, member, store and now; the
    stores, zones and coupon pools this deployment has."""

    @require_viewer
    async def get(self, request: Request) -> Response:
        stores = load_stores(settings.stores_path)
        return self.json(
            {
                "events": {t: event_fields([t]) for t in sorted(EVENT_FIELDS)},
                "member": MEMBER_FIELDS,
                "store": STORE_FIELDS,
                "now": NOW_FIELDS,
                "stores": [
                    {"id": s.id, "name": s.name, "zones": [z.id for z in s.zones]}
                    for s in stores.values()
                ],
                "pools": sorted(registry.refs.pools) if registry.refs else [],
                "channels": ["push", "sms", "wechat", "email", "log"],
            }
        )


@app.page("/report")
class AllReport(View):
    """`?from=&to=`: the report of every trigger (as `storepulse report --json`), reused for 10
    s per window so a console refreshing its list does not start a child process each time."""

    @require_viewer
    async def get(self, request: Request) -> Response:
        window = f"{request.query.get('from', '24h')}|{request.query.get('to', '')}"
        cached = _reports.get(window)
        if cached and time.monotonic() - cached[0] < REPORT_REUSE_S:
            return self.json(cached[1])
        args = ["report", "--json", "--from", request.query.get("from", "24h")]
        if request.query.get("to"):
            args += ["--to", request.query["to"]]
        code, out, err = await _child(args, b"", BACKTEST_TIMEOUT_S)
        if code != 0:
            return self.json({"error": err.strip()[-500:] or f"report exited {code}"}, status=422)
        report = orjson.loads(out)
        if len(_reports) >= 32:  # windows come from the query string: keep a few
            _reports.clear()
        _reports[window] = (time.monotonic(), report)
        return self.json(report)


@app.page("/lookup")
class Lookup(View):
    """`?kind=phone&value=...`: the member an identifier is bound to (phones and MACs are
    hashed here first, as at the edge; the raw value is neither kept nor logged)."""

    @require_viewer
    async def get(self, request: Request) -> Response:
        kind, value = request.query.get("kind", ""), request.query.get("value", "").strip()
        if kind == "member_id":
            return self.json({"member_id": value})
        if kind not in ("member_card", "phone", "openid", "app_device_id", "mac") or not value:
            return self.json(
                {"error": "kind: member_id, member_card, phone, openid, app_device_id or mac"},
                status=422,
            )
        idents = identifiers_of({kind: value}, settings.hash_secret)
        if not idents or idents[0][0] != kind:
            return self.json({"error": f"{kind}: not a usable identifier"}, status=422)
        ident_key = key(settings, "id", f"{idents[0][0]}:{idents[0][1]}")
        redis = redis_client(settings)
        found = await with_redis(lambda: redis.get(ident_key), "identifier look-up")
        if found is None:
            return self.json({"error": f"no member has this {kind}"}, status=404)
        return self.json({"member_id": as_bytes(found).decode()})


@app.page("/dead-letters")
class DeadLetters(View):
    """`?limit=200`: the latest dead letters (already redacted when written), counted by source
    and reason, each with a short sample of its value."""

    @require_viewer
    async def get(self, request: Request) -> Response:
        from state.topic_reads import read_records

        try:
            limit = max(1, min(1000, int(request.query.get("limit", "200"))))
        except ValueError:
            return self.json({"error": "limit: a whole number"}, status=400)
        since = int(time.time() * 1000) - 7 * 86_400_000
        found: list[dict[str, Any]] = []

        def keep(records: list[Any]) -> None:
            for r in records:
                try:
                    body = orjson.loads(r.value)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(body, dict):
                    found.append(body)
            del found[: max(0, len(found) - limit)]

        await read_records(settings, topic_name("dead-letter"), keep, since_ms=since)
        counts: dict[str, int] = {}
        for d in found:
            label = f"{d.get('source_topic')}|{d.get('reason')}"
            counts[label] = counts.get(label, 0) + 1
        latest = sorted(found, key=lambda d: -int(d.get("at") or 0))[:50]
        return self.json(
            {
                "counts": [
                    {"source": k.split("|")[0], "reason": k.split("|")[1], "count": n}
                    for k, n in sorted(counts.items(), key=lambda kv: -kv[1])
                ],
                "latest": [
                    {
                        "source": d.get("source_topic"),
                        "reason": d.get("reason"),
                        "message": d.get("message"),
                        "at": d.get("at"),
                        "redacted": d.get("redacted"),
                        "sample": _sample(d.get("value_b64")),
                    }
                    for d in latest
                ],
            }
        )


def _sample(value_b64: Any) -> str:
    try:
        raw = base64.b64decode(str(value_b64 or ""))
    except ValueError:
        return ""
    return raw[:300].decode(errors="replace")
