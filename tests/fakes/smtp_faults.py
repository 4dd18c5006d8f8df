"""A tiny SMTP server on loopback that misbehaves on purpose, for the SMTP backend's fault tests.

Each step of the dialogue answers with a scripted :class:`Action`: a :class:`Reply` (possibly
late, or trickled a byte at a time), a :class:`Drop` (the connection reset at once) or
:class:`Silence` (nothing, until the client hangs up). A script may hold for one connection only
(numbered from 1 in the order they were accepted) and, for RCPT and DOT, for one recipient only.

Steps: ``greeting``, ``EHLO``, ``HELO``, ``MAIL``, ``RCPT``, ``DATA`` (the 354), ``DOT`` (the
reply to the final dot), ``NOOP``, ``RSET``, ``QUIT``. No STARTTLS, no AUTH: the TLS and AUTH
tests use aiosmtpd.

What it counts, thread-safely: ``connections`` accepted; ``received[address]``, messages whose
final dot arrived for each recipient, counted before the DOT action runs (a maybe-sent test asks
exactly this: does the server have it, and how many times); ``commands``, every verb in order.

Standard library only, no pytest.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

Step = Literal["greeting", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "DOT", "NOOP", "RSET", "QUIT"]


@dataclass(frozen=True)
class Reply:
    """Send ``text`` (lines joined by CRLF, a final CRLF added), after ``delay`` seconds, with
    ``trickle`` seconds between bytes (0: all at once)."""

    text: str
    delay: float = 0.0
    trickle: float = 0.0

    @property
    def code(self) -> int:
        return int(self.text[:3]) if self.text[:3].isdigit() else -1


@dataclass(frozen=True)
class Drop:
    """Reset the connection at once (SO_LINGER 0, so the client sees a RST, not a clean close)."""


@dataclass(frozen=True)
class Silence:
    """Answer nothing; keep reading until the client hangs up or the server stops."""


Action = Reply | Drop | Silence

DEFAULT_ACTIONS: dict[str, Action] = {
    "greeting": Reply("220 faulty.test ESMTP"),
    "EHLO": Reply("250-faulty.test\r\n250-8BITMIME\r\n250-SIZE 10485760\r\n250 SMTPUTF8"),
    "HELO": Reply("250 faulty.test"),
    "MAIL": Reply("250 2.1.0 OK"),
    "RCPT": Reply("250 2.1.5 OK"),
    "DATA": Reply("354 End data with <CR><LF>.<CR><LF>"),
    "DOT": Reply("250 2.0.0 OK: queued"),
    "NOOP": Reply("250 2.0.0 OK"),
    "RSET": Reply("250 2.0.0 OK"),
    "QUIT": Reply("221 2.0.0 Bye"),
}
UNKNOWN_COMMAND = Reply("502 5.5.2 Command not recognized")


class _Hangup(Exception):
    """The connection is over (dropped, silenced, the client left or the server stops)."""


@dataclass
class _Session:
    sock: socket.socket
    number: int
    pending: bytes = b""
    recipients: list[str] = field(default_factory=list)

    def read_line(self) -> bytes:
        while b"\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Hangup
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"


class FaultySmtpServer:
    """See the module docstring. ``with FaultySmtpServer() as server: ... server.port``."""

    def __init__(self) -> None:
        self._scripts: dict[tuple[str, int | None, str | None], Action] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._sessions: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self.connections = 0
        self.received: Counter[str] = Counter()
        self.commands: list[str] = []
        self.port = 0

    def script(
        self,
        step: Step,
        action: Action,
        *,
        connection: int | None = None,
        address: str | None = None,
    ) -> None:
        """Answer ``step`` with ``action`` from now on: on connection number ``connection`` only
        (None: all of them), and for recipient ``address`` only (RCPT and DOT; None: all)."""
        with self._lock:
            self._scripts[(step, connection, address)] = action

    def action(self, step: str, connection: int, address: str | None = None) -> Action:
        """The most specific script for this step, else the well-behaved default."""
        candidates: list[tuple[str, int | None, str | None]] = [
            (step, connection, address),
            (step, connection, None),
            (step, None, address),
            (step, None, None),
        ]
        with self._lock:
            for key in candidates:
                if key in self._scripts:
                    return self._scripts[key]
        return DEFAULT_ACTIONS.get(step, UNKNOWN_COMMAND)

    def start(self) -> FaultySmtpServer:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # how often the accept loop looks at the stop flag
        self.port = int(self._listener.getsockname()[1])
        self._accepting = threading.Thread(target=self._accept_loop, name="faulty-smtp")
        self._accepting.start()
        return self

    def stop(self) -> None:
        """Stop accepting, end every session (a reply being delayed stops waiting), join all."""
        self._stopping.set()
        if self._accepting is not None:
            self._accepting.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sessions = list(self._sessions.values())
        for sock, _ in sessions:
            _shutdown(sock)
        for _, thread in sessions:
            thread.join(timeout=5)

    def __enter__(self) -> FaultySmtpServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            with self._lock:
                self.connections += 1
                number = self.connections
                thread = threading.Thread(
                    target=self._serve, args=(sock, number), name=f"faulty-smtp-{number}"
                )
                self._sessions[number] = (sock, thread)
            thread.start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        session = _Session(sock, number)
        try:
            self._act(session, self.action("greeting", number))
            while True:
                self._command(session, session.read_line())
        except (_Hangup, OSError):
            pass
        finally:
            sock.close()

    def _command(self, session: _Session, line: bytes) -> None:
        words = line.decode("utf-8", "replace").strip().split(" ", 1)
        verb = words[0].upper()
        argument = words[1] if len(words) > 1 else ""
        with self._lock:
            self.commands.append(verb)
        if verb == "MAIL":
            session.recipients = []
        if verb == "RCPT":
            self._rcpt(session, _address(argument))
        elif verb == "DATA":
            self._data(session)
        else:
            self._act(session, self.action(verb, session.number))
        if verb == "QUIT":
            raise _Hangup

    def _rcpt(self, session: _Session, address: str) -> None:
        action = self.action("RCPT", session.number, address)
        if isinstance(action, Reply) and 200 <= action.code < 300:
            session.recipients.append(address)
        self._act(session, action)

    def _data(self, session: _Session) -> None:
        action = self.action("DATA", session.number)
        self._act(session, action)
        if not (isinstance(action, Reply) and action.code == 354):
            return
        while session.read_line() != b".\r\n":
            pass  # the message itself is of no interest here, only that it arrived whole
        with self._lock:
            self.received.update(session.recipients)
        first = session.recipients[0] if session.recipients else None
        self._act(session, self.action("DOT", session.number, first))

    def _act(self, session: _Session, action: Action) -> None:
        if isinstance(action, Drop):
            session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise _Hangup  # _serve closes the socket: with linger 0, a RST
        if isinstance(action, Silence):
            while session.sock.recv(65536):
                pass
            raise _Hangup
        self._reply(session.sock, action)

    def _reply(self, sock: socket.socket, reply: Reply) -> None:
        if self._stopping.wait(reply.delay):
            raise _Hangup
        data = reply.text.encode() + b"\r\n"
        if not reply.trickle:
            sock.sendall(data)
            return
        for byte in _bytes_of(data):
            sock.sendall(byte)
            if self._stopping.wait(reply.trickle):
                raise _Hangup


def _address(argument: str) -> str:
    """``TO:<ana@example.org> NOTIFY=NEVER`` -> ``ana@example.org``."""
    start, end = argument.find("<"), argument.find(">")
    return argument[start + 1 : end] if 0 <= start < end else argument.partition(":")[2].strip()


def _bytes_of(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by its own thread
        sock.shutdown(socket.SHUT_RDWR)  # wakes the session thread blocked reading
