"""Faust agents; importing this package registers them all on the app."""

from agents import dispatch, ingest, members, timers, trigger_feed, watch

__all__ = ["dispatch", "ingest", "members", "timers", "trigger_feed", "watch"]
