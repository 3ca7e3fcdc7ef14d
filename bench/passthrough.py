"""The ceiling of faust itself: one agent that reads, parses and re-publishes every record.

One consume and one produce per record, no state, no Redis: what any faust-streaming worker pays
per message on this machine. `bench/run.py` runs it on the same backlog as raw aiokafka and
StorePulse, so the three rates can be compared in one run.

Usage: passthrough.py BOOTSTRAP EXPECTED OUT_FILE TOPIC [TOPIC ...]; writes records/s to OUT_FILE
(faust redirects stdout into its log).
"""

from __future__ import annotations

import os
import sys
import time
import uuid

import faust
import orjson


def main() -> None:
    bootstrap, expected, out, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
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
            await sink.send(value=orjson.dumps(orjson.loads(value)))
            seen["n"] += 1
            if seen["n"] >= expected:
                rate = seen["n"] / max(time.monotonic() - seen["start"], 1e-6)
                with open(out, "w") as f:  # noqa: ASYNC230 - once, at the end
                    f.write(f"{rate:.0f}\n")
                os._exit(0)  # a measurement, not a service: no graceful shutdown needed

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
