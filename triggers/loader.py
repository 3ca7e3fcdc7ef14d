"""Reads trigger YAML into validated definitions; errors name the file, trigger and field."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.settings import Settings
from triggers.catalog import References
from triggers.model import TriggerDef


class TriggerFileError(ValueError):
    """One or more definitions are invalid; `errors` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + ("if" if item == "if_" else str(item)))
    return "".join(parts) or "(trigger)"


def describe_errors(exc: ValidationError, source: str, tid: str = "") -> list[str]:
    """One line per problem: source, trigger id, field path, what is wrong."""
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        where = f"trigger {tid}: " if tid else ""
        lines.append(f"{source}: {where}{_field_path(err['loc'])}: {msg}")
    return lines


def references(settings: Settings) -> References:
    """The pools, stores and zones this deployment configures, which definitions may name."""
    from state.coupons import load_pools
    from state.stores import load_stores

    stores = load_stores(settings.stores_path)
    return References(
        pools=frozenset(load_pools(settings.coupons_path)),
        stores=frozenset(stores),
        zones=frozenset(z.id for store in stores.values() for z in store.zones),
        extra_event_fields=frozenset(
            e.split(":", 1)[1].strip() for e in settings.extra_fields.split(",") if ":" in e
        ),
    )


def parse_triggers(documents: Any, source: str, refs: References | None = None) -> list[TriggerDef]:
    """Accepts one trigger, a list, or `{triggers: [...]}`; raises TriggerFileError."""
    if isinstance(documents, dict) and "triggers" in documents:
        documents = documents["triggers"]
    if isinstance(documents, dict):
        documents = [documents]
    if not isinstance(documents, list):
        raise TriggerFileError(
            [
                f"{source}: expected a trigger, a list of triggers or "
                f"`triggers:`, got {type(documents).__name__}"
            ]
        )
    triggers: list[TriggerDef] = []
    errors: list[str] = []
    for index, raw in enumerate(documents):
        tid = raw.get("id", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            triggers.append(TriggerDef.model_validate(raw, context=refs))
        except ValidationError as exc:
            errors.extend(describe_errors(exc, source, tid))
    if errors:
        raise TriggerFileError(errors)
    return triggers


def load_paths(paths: Iterable[str | Path], refs: References | None = None) -> list[TriggerDef]:
    """Load every `*.yaml`/`*.yml` under the given files or folders; duplicate ids are an error."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml")))
        elif p.exists():
            files.append(p)
        else:
            raise TriggerFileError([f"{p}: no such file or folder"])
    triggers: list[TriggerDef] = []
    errors: list[str] = []
    seen: dict[str, Path] = {}
    for f in files:
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        except yaml.YAMLError as exc:
            errors.append(f"{f}: not valid YAML: {exc}")
            continue
        for doc in docs:
            try:
                for t in parse_triggers(doc, str(f), refs):
                    if t.id in seen:
                        errors.append(f"{f}: trigger {t.id}: id already defined in {seen[t.id]}")
                    seen[t.id] = f
                    triggers.append(t)
            except TriggerFileError as exc:
                errors.extend(exc.errors)
    if errors:
        raise TriggerFileError(errors)
    return triggers
