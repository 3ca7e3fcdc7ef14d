"""Faust agents; importing this package registers them all on the app."""

from agents import dispatch, ingest, members, timers

__all__ = ["dispatch", "ingest", "members", "timers"]
