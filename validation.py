"""Decides, for raw input bytes, whether they are an acceptable event, and if not, exactly why.

Pure and total: any bytes give either `Accepted` or `Rejected`, never an exception. The ingest
agent sends rejections to `dead-letter` with the reason code and message from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from topics import INPUT_SCHEMAS, InputEvent

MAX_FUTURE_MS = 5 * 60_000  # sensor clocks drift; more than this is a broken clock
MAX_PAST_MS = 7 * 86_400_000  # older events are not "real time" any more


@dataclass(frozen=True)
class Accepted:
    event: InputEvent


@dataclass(frozen=True)
class Rejected:
    reason: str  # machine-readable, used as a metric label: a fixed, small set
    message: str  # for a person: names the field and what was wrong


REASONS = (
    "too_large",
    "not_json",
    "not_object",
    "unknown_topic",
    "unknown_kind",
    "schema",
    "ts_future",
    "ts_too_old",
    "no_identifier",
)


def validate(topic: str, raw: bytes | None, now_ms: int, max_bytes: int) -> Accepted | Rejected:
    if raw is None:
        return Rejected("not_json", "record has no value (tombstone) on an input topic")
    if len(raw) > max_bytes:
        return Rejected("too_large", f"record is {len(raw)} bytes; the limit is {max_bytes}")
    schema = INPUT_SCHEMAS.get(topic)
    if schema is None:
        return Rejected("unknown_topic", f"no schema for topic {topic!r}")
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("not_json", f"not valid JSON: {exc}")
    if not isinstance(data, dict):
        return Rejected("not_object", f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind", schema.model_fields["kind"].default)
    if kind != schema.model_fields["kind"].default:
        return Rejected("unknown_kind", f"kind {str(kind)[:40]!r} is not known on topic {topic!r}")
    try:
        event = schema.model_validate(data)
    except ValidationError as exc:
        return Rejected("schema", _describe(exc))
    except (RecursionError, ValueError) as exc:
        return Rejected("schema", f"cannot validate: {exc}"[:300])
    if event.ts > now_ms + MAX_FUTURE_MS:
        return Rejected("ts_future", f"ts: {event.ts} is more than 5 minutes in the future")
    if event.ts < now_ms - MAX_PAST_MS:
        return Rejected("ts_too_old", f"ts: {event.ts} is more than 7 days in the past")
    if not _has_identifier(event):
        return Rejected("no_identifier", "no identifier: give member_id, app_device_id or openid")
    return Accepted(event)


def _has_identifier(event: InputEvent) -> bool:
    return any(getattr(event, name, None) for name in ("member_id", "app_device_id", "openid"))


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)[:500]
