"""An agent that keeps crashing is reported, and a crash loop is recognised."""

from __future__ import annotations

from agents.supervisor import Supervisor


def test_crashes_are_reported_and_a_loop_within_the_window_is_recognised():
    sup = Supervisor(window_s=60, limit=3)
    assert not sup.record("members", ValueError("x"), now=0.0)
    assert sup.crashing(now=10.0) == ["members"]
    assert not sup.record("members", ValueError("x"), now=100.0)  # spread out: no loop
    assert not sup.record("members", ValueError("x"), now=130.0)
    assert sup.record("members", KeyError("y"), now=150.0)  # three within 60 s
    assert sup.report()["members"]["last_error"] == "KeyError: 'y'"
    assert sup.crashing(now=500.0) == []  # quiet for a window: healthy again
