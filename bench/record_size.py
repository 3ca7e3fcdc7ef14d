"""Bytes of one heavy member's record: a member who checks in and buys every day for a year while
40 campaigns (each live nine days in turn, coupons from every third) fire for them, folded with
the pipeline's own `step`. Prints the serialized size and what takes it, largest first.

`python bench/record_size.py` (issue #21's target: 1 KB; see docs/benchmark.md).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from state.loyalty import load_loyalty  # noqa: E402
from state.member_state import StateContext  # noqa: E402
from state.stores import Store  # noqa: E402
from tests.story import Story, member  # noqa: E402
from triggers.engine import TriggerSet  # noqa: E402
from triggers.loader import parse_triggers  # noqa: E402

DAY = 86_400_000
T0 = 1_764_036_000_000


def campaigns(n: int = 40) -> list[dict]:
    start = datetime.fromtimestamp(T0 / 1000, UTC)
    coupon = {"type": "coupon", "channel": "push", "pool": "p", "value": 20, "expiry": "7d"}
    return [
        {
            "id": f"campaign-{i:02d}",
            "name": f"campaign {i}",
            "when": {"event": "checkin" if i % 2 else "purchase"},
            "schedule": {
                "start": (start + timedelta(days=9 * i)).isoformat(),
                "end": (start + timedelta(days=9 * i + 9)).isoformat(),
            },
            "then": [
                coupon if i % 3 == 0 else {"type": "message", "channel": "push", "template": "hi"}
            ],
            "guardrails": {"quiet_hours": None, "cooldown": "7d" if i % 4 == 0 else "1d"},
        }
        for i in range(n)
    ]


def year_of_a_daily_shopper(days: int = 365) -> tuple[dict, int]:
    stores = {"s1": Store(id="s1", name="One", visit_timeout="30m")}
    s = Story(TriggerSet.build(parse_triggers(campaigns(), "bench")), stores, record=member())
    s.ctx = StateContext(
        s.ctx.stores,
        load_loyalty(str(ROOT / "config" / "loyalty.yaml")),
        s.ctx.extra_dwell_ms,
        coupon_code=lambda pool, action: f"P-{action[:12]}",
    )
    fires = 0
    for d in range(days):
        t = T0 + d * DAY
        fires += len(s.event("checkin", t).actions)
        sale: dict[str, Any] = {
            "receipt_id": f"r{d}",
            "total": 128.5,
            "items": [{"sku": "a", "qty": 1, "price": 128.5}],
        }
        fires += len(s.event("purchase", t + 1_800_000, **sale).actions)
        s.timer(t + 4_000_000)
    return s.record, fires


def main() -> None:
    record, fires = year_of_a_daily_shopper()
    size = len(orjson.dumps(record))
    print(f"daily shopper, 365 days, 40 campaigns ({fires} fires): {size} bytes serialized")
    parts = sorted(record.items(), key=lambda kv: -len(orjson.dumps(kv[1])))
    for name, value in parts[:8]:
        print(f"  {name:14s} {len(orjson.dumps(value)):6d}")
    for name, value in sorted(
        (record.get("purchases") or {}).items(), key=lambda kv: -len(orjson.dumps(kv[1]))
    )[:4]:
        print(f"  purchases.{name:5s} {len(orjson.dumps(value)):6d}")


if __name__ == "__main__":
    main()
