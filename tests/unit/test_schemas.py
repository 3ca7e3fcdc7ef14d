"""The published JSON Schemas are current, and the documented examples pass both validators."""

from __future__ import annotations

import re
import time

import jsonschema
import orjson
import pytest

from contracts import export as schemas_export
from core.settings import ROOT
from edge.validation import Accepted, validate

DOC = (ROOT / "docs" / "events.md").read_text()
EXAMPLES = re.findall(r"<!-- topic: (\w+) -->\n```json\n(.*?)```", DOC, re.S)


@pytest.mark.parametrize("name", sorted(schemas_export.generated()))
def test_schema_files_match_the_models(name):
    on_disk = (schemas_export.SCHEMA_DIR / name).read_bytes()
    assert on_disk == schemas_export.render(schemas_export.generated()[name]), (
        f"schemas/{name} is stale: run `storepulse schemas export`"
    )


def test_every_topic_has_a_documented_example():
    assert {topic for topic, _ in EXAMPLES} == {
        "checkins",
        "wifi",
        "beacons",
        "pos",
        "identity",
        "members",
    }


@pytest.mark.parametrize(("topic", "example"), EXAMPLES)
def test_documented_examples_are_accepted(topic, example):
    data = orjson.loads(example)
    schema = orjson.loads((schemas_export.SCHEMA_DIR / f"{topic}.schema.json").read_bytes())
    jsonschema.validate(data, schema)
    now = data["ts"] + 60_000  # the examples carry a fixed time; validate as if it were now
    result = validate(topic, example.encode(), now, 64 * 1024)
    assert isinstance(result, Accepted), result


def test_published_schema_rejects_what_the_worker_rejects():
    schema = orjson.loads((schemas_export.SCHEMA_DIR / "wifi.schema.json").read_bytes())
    bad = {
        "event_id": "e",
        "ts": int(time.time() * 1000),
        "kind": "probe",
        "store_id": "s",
        "ap_id": "a",
        "mac": "aa:bb:cc:dd:ee:ff",
        "rssi": 12,
    }
    with pytest.raises(jsonschema.ValidationError, match="12"):
        jsonschema.validate(bad, schema)


def test_the_kcat_example_is_accepted_now():
    text = (ROOT / "docs" / "events.md").read_text()
    block = text.split("<!-- kcat -->", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    line = next(ln for ln in block.splitlines() if ln.startswith("echo "))
    now = int(time.time() * 1000)
    payload = line.split('"', 1)[1].rsplit('"', 1)[0].replace('\\"', '"').replace("$TS", str(now))
    result = validate("checkins", payload.encode(), now, 64 * 1024)
    assert isinstance(result, Accepted), result


@pytest.mark.parametrize(("topic", "example"), EXAMPLES)
def test_documented_examples_name_what_the_sample_registry_knows(topic, example):
    from state.stores import load_stores

    stores = load_stores(str(ROOT / "config" / "stores.yaml"))
    data = orjson.loads(example)
    for field, known in (
        ("store_id", set(stores)),
        ("home_store", set(stores)),
        ("ap_id", {ap for s in stores.values() for ap in s.wifi_aps}),
        ("beacon_id", {b for s in stores.values() for b in s.beacons}),
        ("zone_id", {z.id for s in stores.values() for z in s.zones}),
    ):
        if field in data:
            assert data[field] in known, f"{field} {data[field]!r} is not in config/stores.yaml"
