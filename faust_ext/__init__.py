"""Everything StorePulse changes in faust-streaming and aiokafka, and reads of their private state,
in one room, installed by one call for the versions they were written against.

- `serialization`: orjson as a faust codec;
- `kafka_backoff`: aiokafka's sender waits after a failed metadata update (aio-libs/aiokafka#496);
- `gap_guard`: faust does not acknowledge records it skipped as an offset gap the first time;
- `empty_commit`: a commit whose partitions were all revoked is skipped, not a worker crash;
- `internals`: the private attributes of faust's App, Consumer and aiokafka's fetcher we read;
- `partition_watch`: the stall watch built on them.
"""

from __future__ import annotations

import os
from importlib.metadata import version

from faust_ext import empty_commit, gap_guard, kafka_backoff, serialization

# Written and tested against exactly these; another version may rename what the patches touch.
WRITTEN_FOR = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


class UntestedVersion(RuntimeError):
    """faust-streaming or aiokafka is not the version the extensions were written for."""


def check_versions() -> None:
    found = {name: version(name) for name in WRITTEN_FOR}
    wrong = {n: v for n, v in found.items() if v != WRITTEN_FOR[n]}
    if wrong and os.environ.get("STOREPULSE_ALLOW_UNTESTED_FAUST") != "1":
        raise UntestedVersion(
            "faust_ext patches faust and aiokafka internals written for "
            + ", ".join(f"{n} {WRITTEN_FOR[n]}" for n in wrong)
            + "; installed: "
            + ", ".join(f"{n} {v}" for n, v in wrong.items())
            + ". Pin them (requirements.lock), or re-check faust_ext/ against the new versions and "
            "set STOREPULSE_ALLOW_UNTESTED_FAUST=1"
        )


def quiet_client_loggers() -> None:
    """aiokafka and faust log at DEBUG on every produce; building those records (faust's worker
    sets the root logger to DEBUG unless told otherwise) cost ~8 % and then ~4 % of a worker in
    py-spy profiles. Every faust process StorePulse runs, the bench's ceilings too, calls this."""
    import logging

    for noisy in ("aiokafka", "kafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.INFO)


def install() -> None:
    """Idempotent; call before the faust App or any aiokafka client is made."""
    check_versions()
    serialization.register()
    kafka_backoff.install()
    gap_guard.install()
    gap_guard.install_commit_guard()
    empty_commit.install()
