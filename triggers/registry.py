"""The triggers this worker evaluates; loaded from STOREPULSE_TRIGGERS_PATH at start-up."""

from __future__ import annotations

from app import settings
from metrics import TRIGGERS_LOADED
from triggers.engine import TriggerSet
from triggers.loader import load_paths

_active: TriggerSet | None = None


def active_triggers() -> TriggerSet:
    global _active
    if _active is None:
        paths = [p for p in settings.triggers_path.split(",") if p]
        _active = TriggerSet.build(load_paths(paths))
        TRIGGERS_LOADED.set(len(_active))
    return _active
