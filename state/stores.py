"""The store registry (config/stores.yaml): stores, their time zones and zones."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Zone(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1, max_length=64)
    name: str
    category: str = "general"


class Store(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1, max_length=64)
    name: str
    timezone: str = "Asia/Shanghai"
    visit_timeout_min: int = Field(default=30, ge=1, le=24 * 60)
    zones: list[Zone] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)"
            ) from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def scope(self) -> dict[str, Any]:
        """What trigger conditions see as `store`."""
        return {"id": self.id, "name": self.name, "timezone": self.timezone}


class StoreRegistryError(ValueError):
    pass


@cache
def load_stores(path: str) -> dict[str, Store]:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StoreRegistryError(f"{p}: cannot read the store registry: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("stores"), list):
        raise StoreRegistryError(f"{p}: expected a top-level `stores:` list")
    stores: dict[str, Store] = {}
    for index, item in enumerate(raw["stores"]):
        try:
            store = Store.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise StoreRegistryError(f"{p}: stores[{index}].{where}: {err['msg']}") from None
        stores[store.id] = store
    return stores
