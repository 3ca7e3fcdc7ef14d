"""Channel configuration (config/channels.yaml), validated at start-up."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.durations import Duration, duration_ms


class ChannelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["log", "webhook"] = "log"
    url: str | None = Field(default=None, pattern=r"^https?://")
    secret_env: str | None = Field(default=None, description="env variable with the HMAC key")
    timeout: Duration = "5s"
    retries: int = Field(default=6, ge=0, le=20, description="attempts after the first")
    backoff: Duration = Field(default="500ms", description="first retry delay, doubling")
    max_backoff: Duration = "30s"
    rate_per_s: float = Field(default=100.0, gt=0, description="sends per second per worker")
    breaker_failures: int = Field(default=5, ge=1, description="failures in a row that open it")
    breaker_reset: Duration = Field(default="10s", description="how long it stays open")

    def ms(self, name: str) -> int:
        return duration_ms(getattr(self, name))

    def secret(self) -> bytes:
        value = os.environ.get(self.secret_env or "", "")
        return value.encode()


class ChannelConfigError(ValueError):
    pass


@cache
def load_channels(path: str) -> dict[str, ChannelConfig]:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ChannelConfigError(f"{p}: cannot read the channel configuration: {exc}") from None
    out: dict[str, ChannelConfig] = {}
    for name, body in (raw.get("channels") or {}).items():
        try:
            config = ChannelConfig.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "(channel)"
            raise ChannelConfigError(f"{p}: channels.{name}.{where}: {err['msg']}") from None
        if config.type == "webhook" and not config.url:
            raise ChannelConfigError(f"{p}: channels.{name}: a webhook needs a url")
        if config.type == "webhook" and not config.secret_env:
            raise ChannelConfigError(
                f"{p}: channels.{name}: a webhook needs `secret_env`, the environment variable "
                "holding its signing key (receivers check every request with it)"
            )
        if config.type == "webhook" and not config.secret():
            raise ChannelConfigError(
                f"{p}: channels.{name}: environment variable {config.secret_env} is not set"
            )
        out[name] = config
    return out
