"""The fold owns replays and timers: a replayed event changes nothing and sends its actions
again; every step says when time alone next changes the member."""

from __future__ import annotations

from state.stores import Store
from tests.story import Story, member
from triggers.engine import TriggerSet
from triggers.loader import parse_triggers

MIN = 60_000
T0 = 1_764_036_000_000
STORES = {"s1": Store(id="s1", name="One", visit_timeout="30m")}
WELCOME = {
    "id": "welcome",
    "name": "welcome",
    "when": {"event": "checkin"},
    "then": [{"type": "message", "channel": "push", "template": "hi"}],
    "guardrails": {"quiet_hours": None, "cooldown": "1m"},
}


def story() -> Story:
    return Story(TriggerSet.build(parse_triggers([WELCOME], "t")), STORES, record=member())


def test_a_replayed_event_is_a_no_op_that_resends_its_actions():
    s = story()
    first = s.event("checkin", T0)
    assert [a["trigger_id"] for a in first.actions] == ["welcome"]
    before = dict(s.record)
    again = s.again()
    assert again.replayed == first.actions and again.actions == first.actions
    assert again.decisions == [] and again.derived == []
    assert s.record == before  # not counted twice: visits, check-ins, cooldown as they were
    assert s.record["checkins_today"] == 1


def test_a_new_event_after_a_replay_is_applied():
    s = story()
    s.event("checkin", T0)
    s.again()
    later = s.event("checkin", T0 + 2 * MIN)
    assert later.replayed is None and s.record["checkins_today"] == 2


def test_each_step_returns_the_next_time_alone_changes_the_member():
    s = story()
    entered = s.event("checkin", T0)
    assert entered.next_due == T0 + 30 * MIN  # the visit ends unless the member is seen again
    seen = s.event("checkin", T0 + 10 * MIN)
    assert seen.next_due == T0 + 40 * MIN
    ended = s.timer(T0 + 40 * MIN)
    assert [d["type"] for d in ended.derived] == ["visit_ended"]
    assert ended.next_due is None


def test_a_replayed_batch_is_recognised_whole_however_many_events_a_member_had_in_it():
    """A crash replays whole member-events records: every id of the batch must still be known,
    not only the last 16, or the replay would count the member's first sales twice."""
    from state.member_state import RECENT_EVENTS, remember_event, replayed_actions
    from state.records import MemberRecord

    record: MemberRecord = member()
    for i in range(30):
        remember_event(record, f"old-{i}", [])
    ids = [f"e-{i}" for i in range(40)]
    for n, event_id in enumerate(ids):  # one batch: the agent passes the count so far
        remember_event(record, event_id, [{"action_id": event_id}], batch=n)
    assert all(replayed_actions(record, e) is not None for e in ids)
    assert replayed_actions(record, ids[0]) == [{"action_id": ids[0]}]  # its actions, to resend
    assert sum(replayed_actions(record, f"old-{i}") is not None for i in range(30)) == (
        RECENT_EVENTS - 1
    )  # and the usual few before it
    # outside a batch the guard stays small: the next event trims it back
    remember_event(record, "next", [])
    assert len(record["_recent"]) == RECENT_EVENTS


BIG_SPENDER = {
    "id": "big-sale",
    "name": "thanks for a big sale",
    "when": {"event": "purchase"},
    "then": [{"type": "message", "channel": "push", "template": "thanks"}],
    "guardrails": {"quiet_hours": None},
}


def sale_story() -> Story:
    triggers = TriggerSet.build(parse_triggers([BIG_SPENDER], "t"))
    two = {**STORES, "s2": Store(id="s2", name="Two", visit_timeout="30m")}
    return Story(triggers, two, record=member())


def totals(s: Story) -> tuple[int, float, int]:
    days = s.record["purchases"]["days"].values()
    return sum(d[0] for d in days), sum(d[1] for d in days), s.record["points"]


def test_a_sale_is_counted_once_by_store_and_receipt_whatever_its_event_id():
    """A resent sale whose edge de-duplication key was lost (a Redis loss) has a new event id
    here and is beyond the 16 recent ids: the receipt still counts once, and fires nothing."""
    s = sale_story()
    assert Story.fired(s.event("purchase", T0, receipt_id="r1", total=500.0)) == ["big-sale"]
    for n in range(20):  # enough other events to push e1 out of the replay guard
        s.event("checkin", T0 + (n + 1) * MIN)
    once = totals(s)
    again = s.event("purchase", T0 + 30 * MIN, receipt_id="r1", total=500.0)
    assert again.actions == [] and again.same_receipt
    assert totals(s) == once
    # the same receipt number at another store is another sale
    s.event("purchase", T0 + 31 * MIN, receipt_id="r1", total=500.0, store_id="s2")
    assert totals(s)[0] == once[0] + 1


def test_a_refund_is_applied_once_and_still_finds_its_sale():
    s = sale_story()
    s.event("purchase", T0, receipt_id="r1", total=500.0)
    s.event("refund", T0 + MIN, receipt_id="r2", original_receipt_id="r1", total=500.0)
    refunded = totals(s)
    assert refunded[0] == 0 and refunded[1] == 0 and refunded[2] == 0
    s.event("refund", T0 + 2 * MIN, receipt_id="r2", original_receipt_id="r1", total=500.0)
    assert totals(s) == refunded  # not refunded twice into negative spend


def quiet_story(**guardrails: object) -> Story:
    doc: dict[str, object] = {
        **WELCOME,
        "guardrails": {"quiet_hours": "22:00-08:00", "max_event_age": "12h", **guardrails},
    }
    return Story(TriggerSet.build(parse_triggers([doc], "t")), STORES, record=member())


H = 60 * MIN
EARLY = T0 - 2 * H - 30 * MIN  # 07:30 in Shanghai (T0 is 10:00 there)


def test_a_message_in_quiet_hours_is_held_until_they_end_then_sent():
    s = quiet_story()
    held = s.event("checkin", EARLY)
    assert Story.verdicts(held) == [("welcome", "fired", "held_quiet_hours")]
    assert held.actions == [] and len(s.record["held"]) == 1
    assert held.next_due is not None and held.next_due <= EARLY + 30 * MIN  # 08:00 local
    assert s.timer(EARLY + 29 * MIN).actions == []
    out = s.timer(EARLY + 30 * MIN).actions
    assert [a["trigger_id"] for a in out] == ["welcome"] and "held" not in s.record
    assert out[0]["payload"]["not_before"] == EARLY + 30 * MIN


def test_quiet_hours_drop_or_a_max_age_shorter_than_the_wait_drop_the_message():
    for s in (quiet_story(quiet_mode="drop"), quiet_story(max_event_age="15m")):
        dropped = s.event("checkin", EARLY)
        assert Story.verdicts(dropped) == [("welcome", "suppressed", "quiet_hours")]
        assert "held" not in s.record


def test_a_send_dropped_after_it_fired_gives_back_its_cooldown_and_cap_slot():
    s = story()  # WELCOME: cooldown 1m
    first = s.event("checkin", T0)
    (action,) = first.actions
    assert s.record["sent"]["push"][1] == 1
    assert Story.verdicts(s.event("checkin", T0 + 1000)) == [("welcome", "suppressed", "cooldown")]
    s.event(
        "action_returned",
        T0 + 2000,
        trigger_id="welcome",
        channel="push",
        fired_at=action["fired_at"],
        reason="suppressed:budget",
    )
    returned = s.last
    assert s.record["sent"]["push"][1] == 0 and "welcome" not in s.record["fired"]
    assert Story.fired(s.event("checkin", T0 + 3000)) == ["welcome"]
    s._step(*returned)  # the same give-back replayed gives nothing back twice
    assert s.record["sent"]["push"][1] == 1 and "welcome" in s.record["fired"]


def test_the_fire_log_forgets_fires_no_guardrail_needs_any_more():
    """40 campaigns, each live for 9 days in turn, fire for a daily shopper over a year: the
    member keeps the fires of the campaigns whose cooldown still runs (and of the once-ever
    one: max_fires needs its count), not a log that grows with every campaign."""
    from datetime import UTC, datetime, timedelta

    day = 86_400_000
    start = datetime.fromtimestamp(T0 / 1000, UTC)
    docs = [
        {
            "id": f"campaign-{i:02d}",
            "name": f"c{i}",
            "when": {"event": "checkin"},
            "schedule": {
                "start": (start + timedelta(days=9 * i)).isoformat(),
                "end": (start + timedelta(days=9 * i + 9)).isoformat(),
            },
            "then": [{"type": "message", "channel": "push", "template": "hi"}],
            "guardrails": {"quiet_hours": None, "cooldown": "7d" if i % 2 else "1d"},
        }
        for i in range(40)
    ]
    docs.append(
        {**WELCOME, "id": "first-visit", "guardrails": {"max_fires": 1, "quiet_hours": None}}
    )
    s = Story(TriggerSet.build(parse_triggers(docs, "t")), STORES, record=member())
    fired = set()
    for d in range(365):
        fired |= set(Story.fired(s.event("checkin", T0 + d * day)))
        s.timer(T0 + d * day + 40 * MIN)
    assert len(fired) == 41  # every campaign fired for the member at some point
    kept = s.record["fired"]
    assert "first-visit" in kept and kept["first-visit"][1] == 1
    assert set(kept) <= {"first-visit", "campaign-39", "campaign-38", "campaign-37"}, kept
    assert s.event("checkin", T0 + 366 * day).actions == []  # max_fires still holds
    # what the member's decision history says is about them: ended campaigns are not in it
    history = s.record["decisions"]
    assert history and all(d[2] != "schedule" for d in history), history
