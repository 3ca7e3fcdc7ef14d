"""Each sample trigger in scenarios/ fires in the story it is written for, and not outside it."""

from __future__ import annotations

import pytest

from core.settings import ROOT
from state.loyalty import load_loyalty
from state.stores import load_stores
from tests.story import Story, member
from triggers.engine import TriggerSet, holdout
from triggers.loader import load_paths

MIN = 60_000
DAY = 86_400_000
T0 = 1_764_036_000_000  # Tue 2025-11-25 10:00 in Shanghai
STORE = "sh-jingan"
TRIGGERS = TriggerSet.build(load_paths([ROOT / "scenarios"]))
STORES = load_stores(str(ROOT / "config" / "stores.yaml"))
LOYALTY = load_loyalty(str(ROOT / "config" / "loyalty.yaml"))
HOLDOUTS = {t.id: t.definition.guardrails.holdout for t in TRIGGERS.by_id.values()}


def story(**fields) -> Story:
    """A member who is in no control group, so the story shows what treated members get."""
    member_id = next(
        f"m{i}" for i in range(100) if not any(holdout(f"m{i}", t, s) for t, s in HOLDOUTS.items())
    )
    return Story(TRIGGERS, STORES, LOYALTY, member(member_id, **fields), store_id=STORE)


def beacon(s: Story, ts: int, zone: str, kind: str = "enter"):
    return s.event(
        "beacon", ts, kind=kind, beacon_id=f"b-{STORE}-{zone}", rssi=-55, proximity="near"
    )


def test_there_are_ten_or_more_samples():
    assert len(TRIGGERS) >= 10


def test_first_checkin_welcome():
    s = story()
    assert "first-checkin-welcome" in s.fired(s.event("checkin", T0))
    assert "first-checkin-welcome" not in s.fired(s.event("checkin", T0 + 5 * MIN))


def test_welcome_back_after_30_days_wins_over_the_birthday_gift():
    s = story(birthday="1990-11-03")
    s.event("checkin", T0 - 31 * DAY)
    s.timer(T0 - 31 * DAY + 31 * MIN)
    r = s.event("checkin", T0)
    assert "welcome-back-30d" in s.fired(r)
    assert ("birthday-month-gift", "suppressed", "group") in s.verdicts(r)
    coupon = next(a for a in r.actions if a["trigger_id"] == "welcome-back-30d")
    assert coupon["payload"]["pool"] == "welcome-back-20" and "Li" in coupon["payload"]["template"]
    s.timer(T0 + 31 * MIN)
    assert "welcome-back-30d" not in s.fired(s.event("checkin", T0 + 2 * DAY))


def test_first_visit_onboarding_tags_once():
    s = story()
    assert "first-visit-onboarding" in s.fired(s.event("checkin", T0))
    assert "new-visitor" in s.record["tags"]
    s.timer(T0 + 31 * MIN)
    assert "first-visit-onboarding" not in s.fired(s.event("checkin", T0 + DAY))


@pytest.mark.parametrize(("tier", "alerted"), [("gold", True), ("black", True), ("pink", False)])
def test_top_tier_arrival_alerts_an_advisor(tier, alerted):
    s = story(tier=tier)
    r = s.event("checkin", T0)
    assert ("top-tier-advisor-alert" in s.fired(r)) is alerted
    if alerted:
        alert = next(a for a in r.actions if a["trigger_id"] == "top-tier-advisor-alert")
        assert alert["channel"] == "staff" and tier in alert["payload"]["text"]


def test_ten_minutes_in_cosmetics_without_a_purchase():
    s = story()
    for minute in (0, 4, 8):
        beacon(s, T0 + minute * MIN, "cosmetics", "enter" if minute == 0 else "ranging")
    r = s.timer(T0 + 10 * MIN)
    assert "cosmetics-linger-no-purchase" in s.fired(r)
    buyer = story()
    buyer.event("purchase", T0 - MIN, total=99.0, receipt_id="r1")
    for minute in (0, 4, 8):
        beacon(buyer, T0 + minute * MIN, "cosmetics", "enter" if minute == 0 else "ranging")
    assert "cosmetics-linger-no-purchase" not in buyer.fired(buyer.timer(T0 + 10 * MIN))


def test_lunch_hour_food_court_offer_only_at_lunch():
    s = story()
    assert "lunch-food-court" in s.fired(beacon(s, T0 + 2 * 60 * MIN, "food-court"))
    late = story()
    r = beacon(late, T0 + 5 * 60 * MIN, "food-court")
    assert ("lunch-food-court", "suppressed", "schedule") in late.verdicts(r)


def test_no_purchase_within_45_minutes_of_arriving():
    s, buyer = story(), story()
    for who in (s, buyer):
        who.event("checkin", T0)
        for minute in (15, 30, 40):
            who.event("wifi", T0 + minute * MIN, kind="association", ap_id="ap-fashion", rssi=-60)
    buyer.event("purchase", T0 + 41 * MIN, total=10.0, receipt_id="r1")
    assert "no-purchase-45min" not in s.fired(s.timer(T0 + 44 * MIN))
    assert "no-purchase-45min" in s.fired(s.timer(T0 + 45 * MIN))
    assert "no-purchase-45min" not in buyer.fired(buyer.timer(T0 + 45 * MIN))


def test_thanks_an_hour_after_a_visit_with_a_purchase():
    s = story()
    s.event("purchase", T0, total=200.0, receipt_id="r1")
    s.timer(T0 + 30 * MIN)  # visit ends
    assert "thanks-after-visit" in s.fired(s.timer(T0 + 90 * MIN))


def test_browsed_cosmetics_then_bought():
    s = story()
    beacon(s, T0, "cosmetics")
    r = s.event("purchase", T0 + 12 * MIN, total=300.0, receipt_id="r1")
    assert "beauty-browse-then-buy" in s.fired(r)
    assert "beauty-buyer" in s.record["tags"] and s.record["points"] >= 100


def test_tier_upgrade_congratulations_and_points():
    s = story()
    r = s.event("purchase", T0, total=2500.0, receipt_id="r1")
    assert "tier-upgrade-congrats" in s.fired(r) and s.record["tier"] == "white"
    assert s.record["points"] == 2500 + 500


def test_spend_crosses_1000_today_once():
    s = story()
    assert "big-spender-today" not in s.fired(s.event("purchase", T0, total=600.0, receipt_id="r1"))
    assert "big-spender-today" in s.fired(
        s.event("purchase", T0 + MIN, total=500.0, receipt_id="r2")
    )
    assert "big-spender-today" not in s.fired(
        s.event("purchase", T0 + 2 * MIN, total=50.0, receipt_id="r3")
    )


def test_birthday_month_gift_by_sms():
    s = story(birthday="1988-11-20")
    r = s.event("checkin", T0)
    gift = [a for a in r.actions if a["trigger_id"] == "birthday-month-gift"]
    assert gift and gift[0]["channel"] == "sms"
    assert "birthday-month-gift" not in story(birthday="1988-05-20").fired(
        story(birthday="1988-05-20").event("checkin", T0)
    )
