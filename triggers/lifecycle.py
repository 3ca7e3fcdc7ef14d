"""A trigger's life: versions with author, time and note; statuses; the audit record of each change.

The `triggers` topic (compacted, key: trigger id) holds each trigger's current record:

    {"status": "live", "version": 3, "author": "alice", "at": 1764..., "note": "...",
     "definition": {...}}

(a bare definition, as written before versions existed, reads as `live` version 0). Only `live`
triggers are evaluated. The `trigger-audit` topic (kept for good) holds every change: each
publish, pause, resume, archive, rollback and deletion, with the definition it left in force, so
versions, diffs and "who changed what" are read from it.

Statuses: `draft` (saved, never evaluated) -> `live` (evaluated) <-> `paused` -> `archived` (kept
for its history and reports; publishing it again makes it live). Only drafts are deleted.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, TypedDict

import orjson

Status = Literal["draft", "live", "paused", "archived"]
STATUSES: tuple[Status, ...] = ("draft", "live", "paused", "archived")
Change = Literal["publish", "draft", "pause", "resume", "archive", "rollback", "delete"]


class TriggerRecord(TypedDict):
    status: Status
    version: int
    author: str
    at: int
    note: str
    definition: dict[str, Any]


class AuditRecord(TypedDict):
    trigger_id: str
    change: Change
    status: Status | None  # None: deleted
    version: int
    author: str
    at: int
    note: str
    definition: dict[str, Any] | None


class LifecycleError(ValueError):
    """A change that the trigger's status does not allow (HTTP 409)."""


def read_record(value: bytes) -> TriggerRecord:
    """A `triggers` topic value: an envelope, or a bare definition (live, version 0)."""
    doc = orjson.loads(value)
    if isinstance(doc, dict) and "definition" in doc and "status" in doc:
        if doc["status"] not in STATUSES:
            raise ValueError(f"status {doc['status']!r} is not one of {', '.join(STATUSES)}")
        return TriggerRecord(
            status=doc["status"],
            version=int(doc.get("version") or 0),
            author=str(doc.get("author") or ""),
            at=int(doc.get("at") or 0),
            note=str(doc.get("note") or ""),
            definition=doc["definition"],
        )
    return TriggerRecord(status="live", version=0, author="", at=0, note="", definition=doc)


def next_record(
    current: TriggerRecord | None,
    change: Change,
    author: str,
    at: int,
    note: str = "",
    definition: dict[str, Any] | None = None,
) -> TriggerRecord:
    """The record a change leaves in force, or LifecycleError when the status forbids it.

    `publish` and `rollback` make version N+1 (live); `draft` saves version N+1 of a trigger that
    was never live; `pause`, `resume` and `archive` keep the version and change the status."""
    status = current["status"] if current else None
    version = current["version"] if current else 0
    if change in ("publish", "rollback"):
        if definition is None:
            raise LifecycleError(f"{change} needs a definition")
        return TriggerRecord(
            status="live",
            version=version + 1,
            author=author,
            at=at,
            note=note,
            definition=definition,
        )
    if change == "draft":
        if status in ("live", "paused"):
            raise LifecycleError(
                f"the trigger is {status}: publish the change as a new version (backtest it "
                "first), or archive the trigger and start a new one"
            )
        if definition is None:
            raise LifecycleError("a draft needs a definition")
        return TriggerRecord(
            status="draft",
            version=version + 1,
            author=author,
            at=at,
            note=note,
            definition=definition,
        )
    if current is None:
        raise LifecycleError("no such trigger")
    allowed: dict[str, tuple[Status, ...]] = {
        "pause": ("live",),
        "resume": ("paused",),
        "archive": ("live", "paused", "draft"),
    }
    if change not in allowed:
        raise LifecycleError(f"unknown change {change!r}")
    if current["status"] not in allowed[change]:
        raise LifecycleError(
            f"cannot {change} a trigger that is {current['status']} "
            f"(only one that is {' or '.join(allowed[change])})"
        )
    target: Status = {"pause": "paused", "resume": "live", "archive": "archived"}[change]  # type: ignore[assignment]
    return TriggerRecord(
        status=target,
        version=version,
        author=author,
        at=at,
        note=note,
        definition=current["definition"],
    )


def audit_of(
    trigger_id: str, change: Change, record: TriggerRecord | None, author: str, at: int, note: str
) -> AuditRecord:
    return AuditRecord(
        trigger_id=trigger_id,
        change=change,
        status=record["status"] if record else None,
        version=record["version"] if record else 0,
        author=author,
        at=at,
        note=note,
        definition=record["definition"] if record else None,
    )


def versions(audit: list[AuditRecord]) -> list[AuditRecord]:
    """The records of a trigger's audit that made a version (publish, draft, rollback), oldest
    first; a later record of the same version number (a concurrent publish) wins."""
    by_version: dict[int, AuditRecord] = {}
    for rec in audit:
        if rec["change"] in ("publish", "draft", "rollback") and rec["definition"] is not None:
            by_version[rec["version"]] = rec
    return [by_version[v] for v in sorted(by_version)]


def _lines(definition: dict[str, Any] | None) -> list[str]:
    if definition is None:
        return []
    text = orjson.dumps(definition, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    return text.splitlines(keepends=True)


def diff(trigger_id: str, older: AuditRecord, newer: AuditRecord) -> str:
    """A unified diff of two versions' definitions (keys sorted, so only changes show)."""
    return "".join(
        difflib.unified_diff(
            _lines(older["definition"]),
            _lines(newer["definition"]),
            fromfile=f"{trigger_id} v{older['version']} ({older['author'] or 'unknown'})",
            tofile=f"{trigger_id} v{newer['version']} ({newer['author'] or 'unknown'})",
        )
    )
