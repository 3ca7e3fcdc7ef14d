"""Writes the JSON Schemas producers and editors validate against, from the models the code uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from contracts.inputs import INPUT_SCHEMAS
from triggers.model import TriggerDef

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


def generated() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, one per input topic plus the trigger definition."""
    out: dict[str, dict[str, Any]] = {}
    for topic, model in INPUT_SCHEMAS.items():
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"StorePulse `{topic}` record"
        out[f"{topic}.schema.json"] = schema
        out[f"{topic}.batch.schema.json"] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"StorePulse `{topic}` batch record",
            "description": "Several events in one record (each validated on its own); at most "
            "STOREPULSE_MAX_BATCH_EVENTS events (500) and STOREPULSE_MAX_BATCH_BYTES (1 MiB).",
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 500,
                    "items": {"$ref": f"{topic}.schema.json"},
                }
            },
        }
    trigger = TriggerDef.model_json_schema(mode="validation", by_alias=True)
    trigger["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    trigger["title"] = "StorePulse trigger definition"
    out["trigger.schema.json"] = trigger
    return out


def render(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generated().items():
        path = directory / name
        path.write_bytes(render(schema))
        written.append(path)
    return written
