"""This worker's trigger registry: fed by agents/trigger_feed.py, read by the member agent and the
API. Made from the built App's settings (app.build)."""

from __future__ import annotations

from app import current
from core.settings import parse_caps
from triggers.loader import references
from triggers.registry import AuditLog, TriggerRegistry

_, _settings = current()
registry = TriggerRegistry(
    caps=parse_caps(_settings.frequency_caps),
    refs=references(_settings),
    error_limit=_settings.trigger_error_limit,
    error_window_s=_settings.trigger_error_window_s,
)
audit = AuditLog()
