"""Trigger lifecycle pages: one trigger, its versions and diffs, pause / resume / archive /
rollback, deleting a draft, and the audit log (triggers/lifecycle.py has the rules)."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import Any

import orjson
import yaml
from faust.web import Request, Response, View
from pydantic import ValidationError

from app import current
from core.settings import ROOT
from triggers.lifecycle import AuditRecord, LifecycleError, diff, versions
from triggers.live import audit, registry
from triggers.loader import describe_errors
from triggers.model import TriggerDef
from triggers.registry import definition_doc
from web.api import change_trigger, require_editor, require_key, summary
from web.auth import caller

app, settings = current()
CHANGES = ("pause", "resume", "archive", "rollback")
BACKTEST_TIMEOUT_S = 600.0
_one_backtest = asyncio.Semaphore(1)  # a replay is CPU work: one at a time, out of this process


@app.page("/triggers/backtest")
class BacktestPage(View):
    """POST {"definitions": [draft, ...] (or "definition"), "from", "to", "mode": "beside" |
    "instead"}: what the drafts would have done on the recorded member events (editors). Run in
    a child process (`storepulse triggers backtest - --json`), so this worker's event loop and
    its share of the pipeline are not slowed; nothing is written to Kafka or member state."""

    @require_editor
    async def post(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.read() or b"null")
        except orjson.JSONDecodeError as exc:
            return self.json({"errors": [f"request: not JSON: {exc}"]}, status=400)
        if not isinstance(body, dict):
            return self.json({"errors": ["request: send a JSON object"]}, status=400)
        docs = body.get("definitions") or ([body["definition"]] if "definition" in body else [])
        errors: list[str] = []
        drafts = []
        for n, doc in enumerate(docs if isinstance(docs, list) else []):
            try:
                drafts.append(TriggerDef.model_validate(doc, context=registry.refs))
            except ValidationError as exc:
                errors += describe_errors(exc, f"definitions[{n}]")
        if not drafts and not errors:
            errors.append("definitions: give at least one trigger definition")
        mode = body.get("mode", "beside")
        if mode not in ("beside", "instead"):
            errors.append("mode: `beside` the live triggers or `instead` of them")
        args = ["--instead"] if mode == "instead" else []
        for name in ("from", "to"):
            if body.get(name) is not None:
                args += [f"--{name}", str(body[name])]
        if errors:
            return self.json({"errors": errors}, status=422)
        if _one_backtest.locked():
            return self.json(
                {"error": "a backtest is running on this worker; try again"}, status=429
            )
        async with _one_backtest:
            code, out, err = await _run_backtest(
                [definition_doc(d) for d in drafts], args, BACKTEST_TIMEOUT_S
            )
        if code != 0:
            return self.json({"error": err.strip()[-500:] or f"backtest exited {code}"}, status=422)
        return self.json(orjson.loads(out))


_FIELD = re.compile(r"^([a-z_][a-z0-9_.]*): (.+)$", re.S)


def field_errors(lines: list[str]) -> list[dict[str, str]]:
    """`describe_errors` lines (`request.then.0.template: ...`) as {field, message}."""
    out = []
    for line in lines:
        where, _, message = line.partition(": ")
        path = where.removeprefix("request").lstrip(".")
        inner = _FIELD.match(message)
        if not path and inner:  # a whole-definition check names its field: "if: event has no ..."
            path, message = inner.group(1), inner.group(2)
        out.append({"field": path or "(definition)", "message": message or line})
    return out


@app.page("/triggers/validate")  # before /triggers/{id}: routes match in order
class Validate(View):
    """POST {"definition": {...}} or {"yaml": "..."}: the errors field by field, and the
    definition as JSON and as YAML (the console's form and YAML views of the same thing)."""

    @require_key
    async def post(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.read() or b"null")
        except orjson.JSONDecodeError as exc:
            return self.json({"errors": [{"field": "(request)", "message": str(exc)}]}, status=400)
        if not isinstance(body, dict):
            return self.json(
                {"errors": [{"field": "(request)", "message": "an object"}]}, status=400
            )
        doc = body.get("definition")
        if "yaml" in body:
            try:
                doc = yaml.safe_load(str(body["yaml"])[:200_000])
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"line {mark.line + 1}" if mark is not None else "(yaml)"
                return self.json(
                    {"ok": False, "errors": [{"field": "(yaml)", "message": f"{where}: {exc}"}]}
                )
        if not isinstance(doc, dict):
            return self.json(
                {"ok": False, "errors": [{"field": "(definition)", "message": "an object"}]}
            )
        try:
            definition = TriggerDef.model_validate(doc, context=registry.refs)
        except ValidationError as exc:
            return self.json(
                {
                    "ok": False,
                    "errors": field_errors(describe_errors(exc, "request")),
                    "definition": doc,
                    "yaml": yaml.safe_dump(doc, allow_unicode=True, sort_keys=False),
                }
            )
        clean = definition_doc(definition)
        return self.json(
            {
                "ok": True,
                "errors": [],
                "definition": clean,
                "yaml": yaml.safe_dump(clean, allow_unicode=True, sort_keys=False),
            }
        )


async def _run_backtest(
    docs: list[dict[str, Any]], args: list[str], timeout: float
) -> tuple[int, bytes, str]:
    return await _child(["triggers", "backtest", "-", "--json", *args], orjson.dumps(docs), timeout)


async def _child(args: list[str], stdin: bytes, timeout: float) -> tuple[int, bytes, str]:
    """`storepulse ARGS` in a child process (its CPU is not this worker's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import cli; cli.main()",
        *args,
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 1, b"", f"{args[0]} took longer than {timeout:.0f} s; narrow the window"
    return proc.returncode or 0, out, err.decode(errors="replace")


def _versions(trigger_id: str) -> list[AuditRecord]:
    return versions(audit.by_trigger.get(trigger_id, []))


def _int(request: Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw[:20]!r} is not a whole number") from None


@app.page("/triggers/{trigger_id}/versions")
class Versions(View):
    """Every version of the trigger: number, author, time, note, status it was saved with."""

    @require_key
    async def get(self, request: Request, trigger_id: str) -> Response:
        found = _versions(trigger_id)
        if not found and registry.record(trigger_id) is None:
            return self.json({"error": f"no trigger {trigger_id!r}"}, status=404)
        return self.json(
            {
                "trigger_id": trigger_id,
                "current": summary(registry.record(trigger_id)),
                "versions": [{k: v for k, v in r.items() if k != "definition"} for r in found],
            }
        )


@app.page("/triggers/{trigger_id}/versions/{n}")
class Version(View):
    @require_key
    async def get(self, request: Request, trigger_id: str, n: str) -> Response:
        for r in _versions(trigger_id):
            if str(r["version"]) == n:
                return self.json(r)
        return self.json({"error": f"{trigger_id} has no version {n[:20]!r}"}, status=404)


@app.page("/triggers/{trigger_id}/diff")
class Diff(View):
    """`?from=N&to=M` (default: the last two versions): a unified diff of the definitions."""

    @require_key
    async def get(self, request: Request, trigger_id: str) -> Response:
        found = {r["version"]: r for r in _versions(trigger_id)}
        try:
            older, newer = _int(request, "from"), _int(request, "to")
        except ValueError as exc:
            return self.json({"errors": [str(exc)]}, status=400)
        numbers = sorted(found)
        newer = newer if newer is not None else (numbers[-1] if numbers else None)
        older = older if older is not None else (numbers[-2] if len(numbers) > 1 else None)
        if older not in found or newer not in found:
            return self.json(
                {"error": f"{trigger_id} has versions {numbers}; from={older} to={newer}"},
                status=404,
            )
        return self.json(
            {
                "trigger_id": trigger_id,
                "from": older,
                "to": newer,
                "diff": diff(trigger_id, found[older], found[newer]),
            }
        )


@app.page("/triggers/{trigger_id}/report")
class TriggerReport(View):
    """`?from=&to=` (epoch ms, ISO time or ago): the trigger's funnel, conversions and uplift,
    from what Kafka holds (`storepulse report --trigger ID --json` in a child process)."""

    @require_key
    async def get(self, request: Request, trigger_id: str) -> Response:
        args = ["report", "--trigger", trigger_id, "--json"]
        for name in ("from", "to"):
            if request.query.get(name):
                args += [f"--{name}", request.query[name]]
        code, out, err = await _child(args, b"", BACKTEST_TIMEOUT_S)
        if code != 0:
            return self.json({"error": err.strip()[-500:] or f"report exited {code}"}, status=422)
        return self.json(orjson.loads(out))


@app.page("/triggers/{trigger_id}/{change}")
class ChangeStatus(View):
    """POST pause, resume, archive, or rollback?to=N (a new version equal to N), with an optional
    JSON body {"note": ...}. Editors and admins."""

    @require_editor
    async def post(self, request: Request, trigger_id: str, change: str) -> Response:
        if change not in CHANGES:
            return self.json(
                {"error": f"unknown change {change[:40]!r}: one of {', '.join(CHANGES)}"},
                status=404,
            )
        note = await _note(request)
        definition: dict[str, Any] | None = None
        if change == "rollback":
            try:
                to = _int(request, "to")
            except ValueError as exc:
                return self.json({"errors": [str(exc)]}, status=400)
            match = [r for r in _versions(trigger_id) if r["version"] == to]
            if to is None or not match:
                return self.json(
                    {"error": f"rollback?to=N: {trigger_id} has no version {to}"}, status=404
                )
            definition = match[0]["definition"]
            note = note or f"rollback to v{to}"
        try:
            record = await change_trigger(
                trigger_id,
                change,  # type: ignore[arg-type]
                caller(request).name,
                note,
                definition,
            )
        except LifecycleError as exc:
            return self.json({"error": str(exc)}, status=409)
        return self.json({"trigger_id": trigger_id, "change": change, **summary(record)})


async def _note(request: Request) -> str:
    raw = await request.read()
    if not raw:
        return ""
    try:
        body = orjson.loads(raw)
    except ValueError:
        return ""
    return str(body.get("note") or "")[:500] if isinstance(body, dict) else ""


@app.page("/triggers/{trigger_id}")
class OneTrigger(View):
    """GET the trigger's current record; DELETE a draft (anything else is archived)."""

    @require_key
    async def get(self, request: Request, trigger_id: str) -> Response:
        record = registry.record(trigger_id)
        if record is None:
            return self.json({"error": f"no trigger {trigger_id!r}"}, status=404)
        return self.json({"trigger_id": trigger_id, **record})

    @require_editor
    async def delete(self, request: Request, trigger_id: str) -> Response:
        try:
            await change_trigger(trigger_id, "delete", caller(request).name, await _note(request))
        except LifecycleError as exc:
            status = 404 if registry.record(trigger_id) is None else 409
            return self.json({"error": str(exc)}, status=status)
        return self.json({"trigger_id": trigger_id, "deleted": True})


@app.page("/audit")
class Audit(View):
    """Every change to every trigger, oldest first: `?trigger=ID&after=CURSOR&limit=N` (100)."""

    @require_key
    async def get(self, request: Request) -> Response:
        try:
            after, limit = _int(request, "after") or 0, _int(request, "limit") or 100
        except ValueError as exc:
            return self.json({"errors": [str(exc)]}, status=400)
        wanted = request.query.get("trigger")
        entries = audit.by_trigger.get(wanted, []) if wanted else audit.entries
        page = entries[after : after + min(max(limit, 1), 1000)]
        more = after + len(page) < len(entries)
        return self.json(
            {
                "entries": [{k: v for k, v in e.items() if k != "definition"} for e in page],
                "next": after + len(page) if more else None,
            }
        )
