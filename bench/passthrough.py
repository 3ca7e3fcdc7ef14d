"""The ceiling of faust itself: one agent that reads, parses and re-publishes every record.

One consume and one produce per record, no state, no Redis: what any faust-streaming worker pays
per message on this machine. With --consume-only it parses and produces nothing: the rate at
which faust hands records to an agent at all. `bench/run.py` runs both on the same backlog as raw
aiokafka and StorePulse, so the rates can be compared in one run.

Usage: passthrough.py [--consume-only] BOOTSTRAP EXPECTED OUT_FILE TOPIC [TOPIC ...]; writes
records/s to OUT_FILE (faust redirects stdout into its log).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faust_ext import quiet_client_loggers


def main() -> None:
    args = sys.argv[1:]
    consume_only = args[0] == "--consume-only"
    if consume_only:
        args = args[1:]
    bootstrap, expected, out, topics = args[0], int(args[1]), args[2], args[3:]
    app = faust.App(
        f"passthrough-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=1,
        topic_allow_declare=True,
        autodiscover=False,
        datadir=f"/tmp/passthrough-{os.getpid()}",
    )
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")
    sink = app.topic(topics[0] + "-passthrough", key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "start": 0.0}

    @app.agent(source)
    async def copy(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            if not seen["n"]:
                seen["start"] = time.monotonic()
            if not consume_only:
                await sink.send(value=orjson.dumps(orjson.loads(value)))
            seen["n"] += 1
            if seen["n"] >= expected:
                rate = seen["n"] / max(time.monotonic() - seen["start"], 1e-6)
                with open(out, "w") as f:  # noqa: ASYNC230 - once, at the end
                    f.write(f"{rate:.0f}\n")
                os._exit(0)  # a measurement, not a service: no graceful shutdown needed

    quiet_client_loggers()  # the worker's logging, or every send here costs more than there
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
