"""A real HTTP receiver that records what notifiers POST (webhooks, Slack, Alertmanager's v2 API).

``RecordingReceiver`` listens on a loopback port, stores each JSON body with its path and arrival time, and
can be taken down (``stop``: the port is closed, connections are refused) and brought back on the same
port (``start``), which is what a receiver outage looks like to the sink.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "RecordingReceiver", "free_port"]


@dataclass(frozen=True)
class Received:
    path: str
    body: Any
    at_s: float  # time.time() on arrival


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RecordingReceiver:
    """Records JSON POSTs; the first ``fail_first`` requests get a 503 with ``Retry-After: 0``."""

    def __init__(self, port: int | None = None, *, fail_first: int = 0, start: bool = True) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fail_first = fail_first
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        if start:
            self.start()

    @property
    def bodies(self) -> list[tuple[str, Any]]:
        with self._lock:
            return [(r.path, r.body) for r in self.received]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    failing = receiver.fail_first > 0
                    if failing:
                        receiver.fail_first -= 1
                    else:
                        receiver.received.append(Received(self.path, json.loads(body), time.time()))
                self.send_response(503 if failing else 200)
                if failing:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name=f"receiver-{self.port}").start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    close = stop
