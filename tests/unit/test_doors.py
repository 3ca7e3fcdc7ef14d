"""No text a marketer can type stops the pipeline: cost limits, type and name checks, errors kept
to their trigger, automatic pause; signed webhooks; secrets; redaction."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from channels.webhook import signature, verify
from edge.validation import redact
from state.stores import Store
from tests.story import Story, member
from tests.unit.test_engine import trig
from triggers.catalog import References, event_fields, roots
from triggers.engine import TriggerSet
from triggers.expr import ExpressionError, compile_condition
from triggers.loader import describe_errors, parse_triggers
from triggers.model import TriggerDef
from triggers.registry import TriggerRegistry

ROOT = Path(__file__).parents[2]
T0 = 1_764_036_000_000
CHECKIN = roots(event_fields(["checkin"]))


def errors_of(doc: dict[str, Any], refs: References | None = None) -> list[str]:
    try:
        TriggerDef.model_validate(doc, context=refs)
    except ValidationError as exc:
        return describe_errors(exc, "test")
    return []


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("len('a' * 1000000000000) > 1", "`*` repeats 'a'"),
        ("len('ab' * 900000000) > 1", "repeating text or lists is not allowed"),
        ("len(member.tags * 1000) > 1", "repeating text or lists"),
        ("2 ** 64 > 1", "`**` is not allowed"),
        ("1 / 0 > 0", "division by zero"),
        ("member.visits % 0 == 1", "division by zero"),
        ("member.visits > 10000000000000000", "too large"),
        ("event.channel == '" + "x" * 201 + "'", "at most 200 characters"),
        ("member.tier in [" + ", ".join(["'a'"] * 101) + "]", "at most 100 items"),
        ("not " * 20 + "member.in_store", "nested too deeply"),
        (" or ".join(["member.visits > 1"] * 40), "too long"),
        ("member.visits > 1 and " * 60 + "true", "at most 1000 characters"),
    ],
)
def test_unbounded_constructs_are_refused_naming_the_construct(text, named):
    with pytest.raises(ExpressionError, match=re.escape(named)):
        compile_condition(text, CHECKIN)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("member.tags == 'vip'", "member.tags is a list: use 'vip' in member.tags"),
        ("member.tier > 3", "member.tier is text and 3 is a number"),
        ("member.visits == 'ten'", "never equal"),
        ("member.tags > 1", "member.tags is a list: it has no order"),
        ("'x' in member.visits", "member.visits is a number: `in` needs"),
        ("member.tierr == 'gold'", "member has no field 'tierr' (did you mean `tier`?)"),
        ("event.attrs.foo.bar > 1", "event has no field 'attrs'"),
        ("member.visits.count > 1", "member.visits is a number: it has no field 'count'"),
        ("days_since(member.tier) > 3", "days_since() cannot take member.tier"),
        ("store.city == 'sh'", "store has no field 'city'"),
    ],
)
def test_types_and_names_the_schema_knows_are_checked(text, message):
    with pytest.raises(ExpressionError, match=re.escape(message)):
        compile_condition(text, CHECKIN)


def test_free_maps_and_checked_fields_still_compile_and_compute():
    condition = compile_condition(
        "member.visits_by_store['s1'] >= 2 and 'vip' in member.tags and member.consent.push",
        CHECKIN,
    )
    scope = {"member": {"visits_by_store": {"s1": 2}, "tags": ["vip"], "consent": {"push": True}}}
    assert condition({**scope, "event": {}, "store": {}, "now": {}}) is True


def test_every_sample_trigger_passes_every_check_against_the_sample_configuration():
    from core.settings import Settings
    from triggers.loader import load_paths, references

    triggers = load_paths([ROOT / "scenarios"], references(Settings()))
    assert len(triggers) >= 10 and all(t.if_ is not None for t in triggers)


def test_definitions_that_cannot_work_are_refused_with_the_field_and_nearest_name():
    assert any(
        "when.event" in e and "did you mean `checkin`" in e
        for e in errors_of(trig(when={"event": "chekin"}))
    )
    delay = errors_of(trig(when={"event": "checkin", "delay": {"wait": "99999999999w"}}))
    assert any("when.delay.wait" in e and "3660d" in e for e in delay)
    assert any("description" in e for e in errors_of(trig(description="x" * 1_000_000)))
    refs = References(pools=frozenset({"beauty-30"}), stores=frozenset({"sh-jingan"}))
    coupon = {"type": "coupon", "pool": "beuty-30", "value": 30}
    assert any(
        "then[0].coupon.pool" in e and "did you mean `beauty-30`" in e
        for e in errors_of(trig(then=[coupon]), refs)
    )
    assert any(
        "stores" in e and "sh-jingan" in e for e in errors_of(trig(stores=["sh-jingann"]), refs)
    )
    assert errors_of(trig(**{"if": "member.tags == 'vip'"}))[0].startswith(
        "test: if: member.tags is a list"
    )
    assert errors_of(trig(stores=["sh-jingan"]), refs) == []


def test_an_exception_in_one_trigger_is_its_error_decision_and_the_others_fire():
    triggers = TriggerSet.build(parse_triggers([trig("bad"), trig("good")], "test"))

    def explode(scope: Any) -> bool:
        raise MemoryError("a condition that ate the worker")

    triggers.by_id["bad"] = bad = dataclasses.replace(triggers.by_id["bad"], condition=explode)
    for key, lst in triggers.fire.items():
        triggers.fire[key] = [bad if t.id == "bad" else t for t in lst]
    triggers.split = {
        k: ([bad if t.id == "bad" else t for t in a], b) for k, (a, b) in triggers.split.items()
    }
    result = Story(triggers, {"s1": Store(id="s1", name="One")}, record=member()).event(
        "checkin", T0
    )
    verdicts = {d.trigger_id: (d.verdict, d.reason) for _, d in result.decisions}
    assert verdicts["bad"] == ("error", "MemoryError")
    assert verdicts["good"] == ("fired", "fired")
    assert result.record["checkins_today"] == 1  # the event's state update is kept


def test_a_list_valued_member_field_does_not_break_the_prefilter():
    triggers = TriggerSet.build(parse_triggers([trig(**{"if": "member.tier == 'gold'"})], "t"))
    assert triggers.for_member("checkin", "s1", {"tier": ["gold"]}) == []


def test_a_trigger_erring_repeatedly_is_paused_until_published_again():
    reg = TriggerRegistry(error_limit=3, error_window_s=60)
    body = orjson.dumps(trig("t1"))
    assert reg.apply(b"t1", body) is None
    reg.rebuild()
    assert "t1" in reg.current().by_id
    assert not reg.record_error("t1", "ZeroDivisionError", 100.0)
    assert not reg.record_error("t1", "ZeroDivisionError", 101.0)
    assert reg.record_error("t1", "ZeroDivisionError", 102.0)
    assert reg.paused["t1"]["first_error"] == "ZeroDivisionError"
    assert "t1" not in reg.current().by_id
    assert reg.apply(b"t1", body) is None  # published again
    reg.rebuild()
    assert "t1" in reg.current().by_id and not reg.paused


def test_errors_spread_over_more_than_the_window_do_not_pause():
    reg = TriggerRegistry(error_limit=3, error_window_s=10)
    reg.apply(b"t1", orjson.dumps(trig("t1")))
    reg.rebuild()
    assert not any(reg.record_error("t1", "KeyError", t) for t in (0.0, 20.0, 40.0))


def test_webhook_signatures_cover_the_time_and_expire():
    secret, body, now = b"k" * 16, b'{"action_id": "a1"}', time.time()
    header = signature(secret, body, int(now))
    assert verify(secret, header, body, now) is None
    assert verify(secret, header, body + b" ", now) == "bad signature"
    assert verify(b"other-secret", header, body, now) == "bad signature"
    assert verify(secret, header, body, now + 301) == "too old"  # a replay five minutes on
    assert verify(secret, header.split(",")[1], body, now) == "no timestamp"


def test_a_webhook_without_a_secret_is_a_configuration_error(tmp_path):
    from channels.config import ChannelConfigError, load_channels

    path = tmp_path / "channels.yaml"
    path.write_text("channels:\n  sms: {type: webhook, url: 'http://127.0.0.1:9/x'}\n")
    with pytest.raises(ChannelConfigError, match="secret_env"):
        load_channels(str(path))


def test_default_secrets_are_refused_off_loopback_and_allowed_on_it(monkeypatch, capsys):
    import cli

    for name in ("STOREPULSE_API_TOKEN", "STOREPULSE_HASH_SECRET", "KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STOREPULSE_WEB_HOST", "0.0.0.0")
    assert cli.cmd_worker(None) == 2
    assert "STOREPULSE_API_TOKEN and STOREPULSE_HASH_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("STOREPULSE_API_TOKEN", "t" * 32)
    monkeypatch.setenv("STOREPULSE_HASH_SECRET", "s" * 32)
    from core.settings import Settings

    assert Settings.from_env().default_secrets() == []
    monkeypatch.setenv("STOREPULSE_WEB_HOST", "127.0.0.1")
    monkeypatch.delenv("STOREPULSE_API_TOKEN")
    settings = Settings.from_env()
    assert settings.loopback_only and settings.default_secrets() == ["STOREPULSE_API_TOKEN"]


@pytest.mark.parametrize(
    "planted",
    [
        b"13912345678",
        b"139-1234-5678",
        b"+86 139 1234 5678",
        b"aa:bb:cc:dd:ee:ff",
        b"AA-BB-CC-DD-EE-01",
    ],
)
def test_redaction_hashes_phone_and_mac_shapes_anywhere(planted):
    secret = "s" * 16
    nested = orjson.dumps({"a": {"b": [{"mobile": planted.decode()}]}, "ts": T0})
    for raw in (nested, b"not json: " + planted + b" end"):
        safe, changed = redact(raw, secret)
        assert changed and planted not in (safe or b"")
    safe, _ = redact(nested, secret)
    assert orjson.loads(safe or b"{}")["ts"] == T0  # a timestamp is not a phone
