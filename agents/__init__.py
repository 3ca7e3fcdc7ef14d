"""Faust agents. `register()` (after `app.build`) imports them, which registers them on the App;
importing this package alone registers nothing."""

from __future__ import annotations


def register() -> None:
    from agents import dispatch, ingest, members, timers, trigger_feed, watch  # noqa: F401
