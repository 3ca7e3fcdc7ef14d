"""The store registry (config/stores.yaml): stores, time zones, zones, sensors and thresholds.

Validated once at start-up; an error names the file, the store and the field.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.durations import Duration, duration_ms


class Zone(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1, max_length=64)
    name: str
    category: str = "general"


Feed = Literal["wifi", "beacons", "checkins", "pos"]
FEEDS: tuple[Feed, ...] = ("wifi", "beacons", "checkins", "pos")


class Store(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(min_length=1, max_length=64)
    name: str
    timezone: str = "Asia/Shanghai"
    visit_timeout: Duration = Field(
        default="30m", description="a visit ends when the member was not seen for this long"
    )
    zone_timeout: Duration = Field(
        default="5m",
        description="a zone is left when no sensor placed the member there for this long",
    )
    zones: list[Zone] = Field(default_factory=list)
    wifi_aps: dict[str, str] = Field(default_factory=dict, description="access point -> zone id")
    beacons: dict[str, str] = Field(default_factory=dict, description="beacon -> zone id")
    presence_rssi: int = Field(
        default=-85, ge=-120, le=0, description="weaker WiFi sightings are passers-by, not visitors"
    )
    enter_rssi: int = Field(default=-75, ge=-120, le=0, description="zone entered at or above")
    exit_rssi: int = Field(
        default=-85, ge=-120, le=0, description="zone left below; between the two nothing changes"
    )
    dwell_thresholds: list[Duration] = Field(default_factory=lambda: ["5m", "10m", "20m"])
    opening_hours: str = Field(
        default="10:00-22:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$"
    )
    feeds: list[Feed] = Field(
        default_factory=lambda: list(FEEDS),
        description="sources this store sends; each is watched for silence in opening hours",
    )
    feed_silent_after: Duration = Field(
        default="15m", description="a feed without an event this long in opening hours is silent"
    )

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

    @model_validator(mode="after")
    def _references_exist(self) -> Store:
        zone_ids = {z.id for z in self.zones}
        for kind, mapping in (("wifi_aps", self.wifi_aps), ("beacons", self.beacons)):
            for sensor, zone in mapping.items():
                if zone not in zone_ids:
                    raise ValueError(
                        f"{kind}.{sensor}: zone {zone!r} is not one of this store's "
                        f"zones ({', '.join(sorted(zone_ids)) or 'none'})"
                    )
        if self.exit_rssi > self.enter_rssi:
            raise ValueError("exit_rssi must not be above enter_rssi (hysteresis)")
        return self

    @cached_property
    def opening_minutes(self) -> tuple[int, int]:
        start, end = self.opening_hours.split("-")
        return _minute(start), _minute(end)

    def is_open(self, ts_ms: int) -> bool:
        """Within its opening hours (store-local) at `ts_ms`."""
        local = datetime.fromtimestamp(ts_ms / 1000, self.tz)
        minute, (start, end) = local.hour * 60 + local.minute, self.opening_minutes
        return start <= minute < end if start <= end else minute >= start or minute < end

    @cached_property
    def feed_silent_after_ms(self) -> int:
        return duration_ms(self.feed_silent_after)

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def visit_timeout_ms(self) -> int:
        return duration_ms(self.visit_timeout)

    @cached_property
    def zone_timeout_ms(self) -> int:
        return duration_ms(self.zone_timeout)

    @cached_property
    def dwell_thresholds_ms(self) -> tuple[int, ...]:
        return tuple(sorted(duration_ms(d) for d in self.dwell_thresholds))

    @cached_property
    def zone_by_id(self) -> dict[str, Zone]:
        return {z.id: z for z in self.zones}

    def scope(self) -> dict[str, Any]:
        """What trigger conditions see as `store`."""
        return {"id": self.id, "name": self.name, "timezone": self.timezone}


class StoreRegistryError(ValueError):
    pass


DEFAULT_STORE = Store(id="unknown", name="Unknown store")


@cache
def _minute(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


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
        sid = item.get("id", f"#{index}") if isinstance(item, dict) else f"#{index}"
        try:
            store = Store.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "(store)"
            msg = err["msg"].removeprefix("Value error, ")
            raise StoreRegistryError(f"{p}: stores[{index}] ({sid}).{where}: {msg}") from None
        if store.id in stores:
            raise StoreRegistryError(f"{p}: stores[{index}]: duplicate store id {store.id!r}")
        stores[store.id] = store
    return stores


def accepts_unknown_stores(path: str) -> bool:
    """`accept_unknown_stores: true` at the top of the registry: events from a store id it
    does not list are taken (as store "unknown") instead of dead-lettered `unknown_store`."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return bool(isinstance(raw, dict) and raw.get("accept_unknown_stores"))
