"""A local HTTP receiver standing in for SMS / push / WeChat gateways: it checks signatures and
their age (as a real receiver should, with channels.webhook.verify),
counts deliveries per action id, and can be told to fail for a while (tests, `make chaos`)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from channels.webhook import SIGNATURE_HEADER, verify

SECRET = "receiver-test-secret"


class Receiver:
    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()  # action id -> 2xx answers given
        self.refused = 0
        self.bad_signatures = 0
        self.bodies: dict[str, dict[str, Any]] = {}
        self.first_at: dict[str, float] = {}  # action id -> epoch s of its first delivery
        self.times: dict[str, list[float]] = {}  # action id -> epoch s of every 2xx given
        self.fail_until = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                header = self.headers.get(SIGNATURE_HEADER, "")
                problem = verify(SECRET.encode(), header, body, time.time())
                with receiver.lock:
                    if problem is not None:
                        receiver.bad_signatures += 1
                        status = 401
                    elif time.monotonic() < receiver.fail_until:
                        receiver.refused += 1
                        status = 500
                    else:
                        data = json.loads(body)
                        receiver.accepted[data["action_id"]] += 1
                        receiver.bodies[data["action_id"]] = data
                        receiver.first_at.setdefault(data["action_id"], time.time())
                        receiver.times.setdefault(data["action_id"], []).append(time.time())
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.accepted.clear()
            self.bodies.clear()
            self.first_at.clear()
            self.times.clear()
            self.refused = self.bad_signatures = 0

    def fail_for(self, seconds: float) -> None:
        self.fail_until = time.monotonic() + seconds

    def channels_yaml(self) -> str:
        url = f"http://127.0.0.1:{self.port}/deliver"
        lines = ["channels:"]
        for name in ("push", "sms", "wechat", "staff"):
            lines.append(
                f"  {name}: {{type: webhook, url: '{url}', secret_env: RECEIVER_SECRET, "
                "timeout: 2s, retries: 8, backoff: 200ms, max_backoff: 2s, "
                "breaker_failures: 5, breaker_reset: 1s}"
            )
        return "\n".join(lines) + "\n"
