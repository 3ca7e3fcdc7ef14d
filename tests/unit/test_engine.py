"""Trigger evaluation as a pure function: matching, guardrails, deterministic action ids."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from state.loyalty import Loyalty
from state.member_state import StateContext, apply_event, record_fires
from state.stores import Store
from triggers.engine import TriggerSet, action_id, evaluate, render
from triggers.loader import parse_triggers

TZ = ZoneInfo("Asia/Shanghai")
NOW = 1_764_000_000_000


def triggers(*docs):
    return TriggerSet.build(parse_triggers(list(docs), "test"))


def welcome(**over):
    doc = {
        "id": "welcome",
        "name": "Welcome",
        "when": {"event": "checkin"},
        "if": "member.checkins_today == 1",
        "then": [{"type": "message", "channel": "push", "template": "Hi {member.member_id}"}],
        "guardrails": {"cooldown": "12h", "max_event_age": "10m"},
    }
    doc.update(over)
    return doc


def checkin(ts=NOW, member="m1", event_id="e1", store="s1"):
    return {
        "type": "checkin",
        "ts": ts,
        "member_id": member,
        "event_id": event_id,
        "store_id": store,
    }


CTX = StateContext({"s1": Store(id="s1", name="Store")}, Loyalty())


def decide(tset, event, member=None):
    record, _, _ = apply_event(member, event, CTX)
    return record, evaluate(tset, event, record, {"name": "Store"}, NOW, TZ)


def test_fires_with_rendered_text_and_deterministic_id():
    _, decisions = decide(triggers(welcome()), checkin())
    assert [d.verdict for d in decisions] == ["fired"]
    action = decisions[0].actions[0]
    assert action["payload"]["text"] == "Hi m1"
    assert action["action_id"] == action_id("welcome", "m1", "e1", 0)
    assert action["action_id"] != action_id("welcome", "m1", "e2", 0)


def test_condition_false_is_not_matched():
    tset = triggers(welcome())
    record, _ = decide(tset, checkin())
    _, decisions = decide(tset, checkin(event_id="e2"), record)
    assert [(d.verdict, d.reason) for d in decisions] == [("not_matched", "condition")]


def test_cooldown_suppresses_a_second_fire():
    tset = triggers(welcome(**{"if": ""}))
    record, decisions = decide(tset, checkin())
    record_fires(record, [decisions[0].trigger_id], NOW - 3_600_000)
    _, decisions = decide(tset, checkin(event_id="e2"), record)
    assert [(d.verdict, d.reason) for d in decisions] == [("suppressed", "cooldown")]


def test_stale_event_is_suppressed_not_sent():
    _, decisions = decide(triggers(welcome()), checkin(ts=NOW - 11 * 60_000))
    assert [(d.verdict, d.reason) for d in decisions] == [("suppressed", "stale")]


def test_store_targeting_and_index_by_event_type():
    tset = triggers(welcome(stores=["s2"]), welcome(id="other", when={"event": "purchase"}))
    _, decisions = decide(tset, checkin())
    assert [(d.trigger_id, d.reason) for d in decisions] == [("welcome", "store")]


def test_disabled_trigger_is_never_a_candidate():
    assert len(triggers(welcome(enabled=False))) == 0


def test_render_reaches_only_plain_fields():
    scope = {"member": {"name": "Li"}, "event": {}, "store": {}, "now": {}}
    assert (
        render("Hi {member.name}{member.__class__} {member.missing}!", scope)
        == "Hi Li{member.__class__} !"
    )
