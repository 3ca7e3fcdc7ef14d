"""The loyalty programme (config/loyalty.yaml): points per spend, tier multipliers, tier ladder."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class TierStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=32)
    min_growth: float = Field(ge=0)


class Loyalty(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    currency: str = "CNY"
    points_per_unit: float = Field(default=1.0, ge=0, le=1000)
    tier_multipliers: dict[str, float] = Field(default_factory=dict)
    tiers: list[TierStep] = Field(default_factory=lambda: [TierStep(name="member", min_growth=0)])
    member_days: list[int] = Field(default_factory=list)
    # Amounts in another currency are converted at these rates (units of `currency` per unit);
    # a sale in a currency without one is dead-lettered (`currency`).
    exchange_rates: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ladder_is_ordered(self) -> Loyalty:
        steps = [t.min_growth for t in self.tiers]
        if not self.tiers or steps[0] != 0 or steps != sorted(steps):
            raise ValueError("tiers must start at min_growth 0 and rise")
        if any(not 1 <= d <= 31 for d in self.member_days):
            raise ValueError("member_days are days of the month, 1..31")
        return self

    def tier_for(self, growth: float) -> str:
        name = self.tiers[0].name
        for step in self.tiers:
            if growth >= step.min_growth:
                name = step.name
        return name

    def rank(self, tier: str | None) -> int:
        names = [t.name for t in self.tiers]
        return names.index(tier) if tier in names else -1

    def points_for(self, amount: float, tier: str | None) -> int:
        return int(amount * self.points_per_unit * self.tier_multipliers.get(tier or "", 1.0))


class LoyaltyConfigError(ValueError):
    pass


@cache
def load_loyalty(path: str) -> Loyalty:
    p = Path(path)
    try:
        return Loyalty.model_validate(yaml.safe_load(p.read_text()) or {})
    except (OSError, yaml.YAMLError) as exc:
        raise LoyaltyConfigError(f"{p}: cannot read the loyalty programme: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(programme)"
        raise LoyaltyConfigError(f"{p}: {where}: {err['msg']}") from None
