"""A real HTTP webhook receiver on loopback for the tests (stdlib http.server, a thread).

It records every POST (headers, raw body, time) and answers each with the next status of
`statuses` (then 200), or never answers (`hang=True`: a receiver that accepted the
connection and died), until closed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    deliveries: list[Delivery] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def types(self) -> list[str]:
        return [d.event["type"] for d in self.deliveries]

    def wait_for(self, condition: Any, timeout: float) -> None:
        """Block (a worker thread: call it through trio.to_thread) until `condition(self)`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"webhook receiver: condition not met in {timeout} s; got {self.types()}")
                self.changed.wait(remaining)


@contextmanager
def webhook_receiver(*, statuses: list[int] | None = None, hang: bool = False) -> Iterator[Receiver]:
    receiver = Receiver(url="", statuses=list(statuses or []), hang=hang)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with receiver.changed:
                receiver.deliveries.append(Delivery(dict(self.headers.items()), body, time.monotonic()))
                receiver.changed.notify_all()
                status = receiver.statuses.pop(0) if receiver.statuses else 200
            if receiver.hang:
                receiver.closed.wait(60)
                return
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.closed.set()
        server.shutdown()
        server.server_close()
