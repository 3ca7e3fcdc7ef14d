"""Notices agents that crash, shows them on /health, and stops a worker that cannot recover.

Each agent handles a bad record itself (dead letter, reason `internal`) and goes on; what reaches
here escaped that: faust restarts a crashed agent, and one that crashed on the same record every
5 s looked healthy on /health for minutes. Now /health says `crashing`, and after
`CRASH_LIMIT` crashes within `WINDOW_S` the worker exits with an error so the orchestrator
restarts it (or a person is paged) instead of it looking alive.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.metrics import AGENT_CRASHES

logger = logging.getLogger("storepulse.supervisor")
WINDOW_S = 60.0
CRASH_LIMIT = 5
F = TypeVar("F", bound=Callable[..., Awaitable[None]])


class AgentCrashLoop(RuntimeError):
    """An agent crashed CRASH_LIMIT times within WINDOW_S."""


class Supervisor:
    def __init__(self, window_s: float = WINDOW_S, limit: int = CRASH_LIMIT) -> None:
        self.window_s, self.limit = window_s, limit
        self.crashes: dict[str, deque[float]] = {}
        self.last_error: dict[str, str] = {}

    def record(self, agent: str, exc: BaseException, now: float | None = None) -> bool:
        """Count a crash; True when the agent crashed `limit` times within the window."""
        now = time.monotonic() if now is None else now
        AGENT_CRASHES.labels(agent).inc()
        times = self.crashes.setdefault(agent, deque(maxlen=self.limit))
        times.append(now)
        self.last_error[agent] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return len(times) >= self.limit and now - times[0] <= self.window_s

    def crashing(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return sorted(a for a, t in self.crashes.items() if t and now - t[-1] <= self.window_s)

    def report(self) -> dict[str, Any]:
        return {
            agent: {"crashes_in_window": len(times), "last_error": self.last_error.get(agent)}
            for agent, times in self.crashes.items()
        }


supervisor = Supervisor()


def supervised(name: str) -> Callable[[F], F]:
    """Wrap an agent body: a crash is counted and logged; a crash loop stops the worker."""

    def wrap(body: F) -> F:
        @functools.wraps(body)
        async def run(*args: Any, **kwargs: Any) -> None:
            try:
                await body(*args, **kwargs)
            except Exception as exc:
                looping = supervisor.record(name, exc)
                logger.exception("agent %s crashed (faust restarts it)", name)
                if looping:
                    logger.critical(
                        "agent %s crashed %d times within %.0f s: stopping the worker so that "
                        "it is restarted and looked at",
                        name,
                        supervisor.limit,
                        supervisor.window_s,
                    )
                    from app import current

                    app, _ = current()
                    await app.crash(AgentCrashLoop(f"agent {name} is crash-looping: {exc!r}"))
                raise

        return run  # type: ignore[return-value]

    return wrap
