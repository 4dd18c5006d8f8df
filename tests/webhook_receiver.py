"""A real local HTTP receiver of outgoing webhooks, for the tests (a threaded http.server).

It answers each POST with the next status of ``answers`` (the last one repeats); in ``hang``
mode it reads the request and never answers until it is stopped; in ``trickle`` mode it sends a
200 answer one byte every ``trickle`` seconds (each read is quick, the whole answer is slow).
Every request is kept as it arrived (raw body and headers) so the test verifies it with the
Standard Webhooks library.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(
        self, answers: Sequence[int] = (200,), *, hang: bool = False, trickle: float = 0.0
    ) -> None:
        self.answers = list(answers)
        self.hang = hang
        self.trickle = trickle
        self.received: list[Received] = []
        self.released = threading.Event()  # lets a hanging handler end at shutdown
        self.arrived = threading.Event()  # set when the first request has arrived
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.02)  # a quick shutdown at the test's end

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/drip"

    def _next_answer(self, request: Received) -> int:
        with self._lock:
            self.received.append(request)
            self.arrived.set()
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                headers = {name.lower(): value for name, value in self.headers.items()}
                request = Received(self.path, headers, self.rfile.read(length))
                status = receiver._next_answer(request)
                if receiver.hang:
                    receiver.released.wait(30)
                    return
                if receiver.trickle:
                    self._trickle(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    return
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def _trickle(self, answer: bytes) -> None:
                for byte in answer:
                    if receiver.released.wait(receiver.trickle):  # the test is over
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:  # the client gave up: what the test expects
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet tests

        return Handler

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def refused_url() -> str:
    """A URL on which nothing listens (a port bound, then let go): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/drip"
