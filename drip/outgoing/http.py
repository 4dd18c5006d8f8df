"""One POST under a total deadline: connect, send, and the answer's status line and headers.

``timeout`` bounds the whole exchange, not each read: every socket operation is given only the
time left, so a receiver that accepts and then says nothing, or trickles its answer a byte at a
time, costs at most ``timeout`` seconds. Only the status matters (2xx or not); the body of an
answer is never read. HTTPS verifies certificates and host names (the default context).

Errors are raised as they come: ``TimeoutError`` once the deadline has passed, ``OSError``
(refused, reset, DNS, TLS) and ``http.client.HTTPException`` (an answer that is not HTTP).
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

SEND_CHUNK = 16 * 1024  # bytes per socket send, each given the time left
USER_AGENT = "drip-webhooks/1"

# What the delivery calls: (url, body, headers, timeout) -> the status code.
Post = Callable[[str, bytes, Mapping[str, str], float], int]


class Deadline:
    """An end on the monotonic clock; :meth:`left` raises ``TimeoutError`` once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer within {self.seconds:g}s")
        return remaining


class _DeadlineReader(io.RawIOBase):
    """The socket file of the answer, each read given only the time left."""

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._deadline.left())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))


class _DeadlineConnection(http.client.HTTPConnection):
    """Connects, sends and reads the answer's head within ``deadline``."""

    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline
        self._create_connection = self._connect_within_deadline

    def _connect_within_deadline(
        self, address: tuple[str, int], timeout: float | None, source: Any = None
    ) -> socket.socket:
        sock = socket.create_connection(address, self._deadline.left(), source)
        sock.settimeout(self._deadline.left())  # what is left for a TLS handshake
        return sock

    def send(self, data: Any) -> None:
        if self.sock is None:
            self.connect()
        view = memoryview(data if isinstance(data, bytes | bytearray) else bytes(data))
        while view:
            self.sock.settimeout(self._deadline.left())
            view = view[self.sock.send(view[:SEND_CHUNK]) :]

    def getresponse(self) -> http.client.HTTPResponse:
        self.sock.settimeout(self._deadline.left())
        # Only post_json uses this connection: the method is always POST.
        response = _DeadlineResponse(self.sock, method="POST", deadline=self._deadline)
        try:
            response.begin()  # the status line and the headers, within the deadline
        except BaseException:
            response.close()
            raise
        return response


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    pass


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body`` to ``url`` with ``headers``; the answer's status code (see module doc)."""
    deadline = Deadline(timeout)
    parts = urlsplit(url)
    connection_class = _DeadlineHTTPSConnection if parts.scheme == "https" else _DeadlineConnection
    host = parts.hostname or ""
    connection = connection_class(host, parts.port, deadline=deadline)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    response: http.client.HTTPResponse | None = None
    try:
        connection.request(
            "POST",
            target,
            body=body,
            headers={"user-agent": USER_AGENT, "connection": "close", **headers},
        )
        response = connection.getresponse()
        return response.status
    finally:
        if response is not None:
            response.close()  # its file holds the socket open until closed
        connection.close()
