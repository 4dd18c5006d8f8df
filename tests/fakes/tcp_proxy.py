"""A TCP proxy that can imitate a server restart, for end-to-end fault tests.

PostgreSQL and Redis are shared by every test, so a test cannot restart them. Put this proxy in
front instead: it listens on 127.0.0.1 (port 0 picks a free one) and forwards each connection to
the target, and on demand it does what a restart looks like from the client's side.

- :meth:`TcpProxy.cut` ``(seconds)``: every live connection is reset (RST, both sides: SO_LINGER
  0) and new connections are refused (the port is closed: ECONNREFUSED) for ``seconds``, then
  accepted again, by itself. It returns once the connections are reset and the port is closed.
- :meth:`TcpProxy.down` / :meth:`TcpProxy.up`: the same, held until ``up()`` (which returns once
  the port accepts again). :meth:`TcpProxy.drop_connections`: only the resets, the port stays up.
- :meth:`TcpProxy.url_for`: a ``postgresql+psycopg://user@127.0.0.1:5432/db`` or
  ``redis://127.0.0.1:6379/15`` URL rewritten to go through the proxy.
- Counters: ``accepted`` (connections accepted), ``cuts`` (cut and down calls), ``dropped``
  (connections reset by them); ``active`` (live now) and ``accepting`` (the port is open).

``start()`` / ``stop()`` or a ``with`` block; stopping resets every connection and joins every
thread, in well under a second. While down, the port is closed and re-bound on the way up
(SO_REUSEADDR); if another socket took it meanwhile, ``up()`` raises after a few seconds.

Not a faithful network simulation: no latency, no partial packets (see Toxiproxy for those).
Standard library only, no pytest.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6379}
CHUNK = 65536
SETTLE_TIMEOUT = 5.0  # how long a control call waits for the proxy's threads to obey
RESET_GRACE = 0.3  # how long a reset link may take before its sockets are shut down for writing
REBIND_INTERVAL = 0.05  # how often to retry binding the port again when it is busy


def _reset_on_close(sock: socket.socket) -> None:
    """Make ``close()`` send a RST instead of a FIN, and wake a thread blocked reading ``sock``.

    SHUT_RD sends nothing to the peer (on Linux); the RST goes out when the socket is closed.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)


class _Link:
    """One client connection and its own connection to the target, pumped by two threads."""

    def __init__(self, client: socket.socket, number: int, proxy: TcpProxy) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.number = number
        self.finished = threading.Event()
        self._proxy = proxy
        self._lock = threading.Lock()
        self._cut = False
        self.thread = threading.Thread(target=self._run, name=f"tcp-proxy-link-{number}")

    def cut(self) -> None:
        """Reset both sides; the link's threads close the sockets and finish."""
        with self._lock:
            if self._cut:
                return
            self._cut = True
            sockets = [s for s in (self.client, self.upstream) if s is not None]
        for sock in sockets:
            _reset_on_close(sock)

    def force(self) -> None:
        """Unblock a pump stuck writing to a peer that does not read (full buffers), which
        SHUT_RD cannot wake. The peer may see a FIN just before the RST."""
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        try:
            self._connect_and_pump()
        finally:
            self.client.close()
            if self.upstream is not None:
                self.upstream.close()
            self._proxy._forget(self)
            self.finished.set()

    def _connect_and_pump(self) -> None:
        try:
            upstream = socket.create_connection(self._proxy.target, self._proxy.connect_timeout)
        except OSError:  # the target is down: the client sees its connection reset
            _reset_on_close(self.client)
            return
        upstream.settimeout(None)
        with self._lock:
            self.upstream = upstream
            cut_meanwhile = self._cut
        if cut_meanwhile:
            _reset_on_close(upstream)
            return
        back = threading.Thread(
            target=self._pump, args=(upstream, self.client), name=f"{self.thread.name}-back"
        )
        back.start()
        self._pump(self.client, upstream)
        back.join()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:  # a reset on one side resets the other, as a restart would
            self.cut()
            return
        with self._lock:
            if self._cut:
                return
        with contextlib.suppress(OSError):  # a clean end of one direction is passed on
            sink.shutdown(socket.SHUT_WR)


class TcpProxy:
    """See the module docstring."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.accepted = 0
        self.cuts = 0
        self.dropped = 0
        self._cond = threading.Condition()
        self._links: set[_Link] = set()
        self._want_up = True
        self._up_at: float | None = None  # when a cut ends by itself (time.monotonic)
        self._stopping = False
        self._requested = 0  # generation of the last down/up request
        self._obeyed = 0  # generation the accept thread has put into effect
        self._listening = False
        self._listener: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._wake_r: socket.socket | None = None  # writing to _wake_w interrupts the select
        self._wake_w: socket.socket | None = None

    @classmethod
    def for_url(
        cls, url: str, *, host: str = "127.0.0.1", port: int = 0, connect_timeout: float = 5.0
    ) -> TcpProxy:
        """A proxy to the host and port of ``url`` (a database or Redis URL); not started."""
        target_host, target_port = _target_of(url)
        return cls(target_host, target_port, host=host, port=port, connect_timeout=connect_timeout)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = self._bind()
        self.port = int(self._listener.getsockname()[1])
        self._listening = True
        self._accepter = threading.Thread(target=self._accept_loop, name="tcp-proxy-accept")
        self._accepter.start()
        return self

    def stop(self) -> None:
        """Close the port, reset every connection, join every thread. Safe to call twice."""
        with self._cond:
            if self._accepter is None or self._stopping:
                return
            self._stopping = True
        self._wake()
        self._accepter.join(timeout=SETTLE_TIMEOUT)
        self._reset_links(count=False)
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------

    def cut(self, seconds: float) -> None:
        """Like a restart taking ``seconds``: refuse new connections, reset the live ones, and
        accept again after ``seconds`` by itself. Returns at once the cut is in effect."""
        self._request(up=False, up_at=time.monotonic() + seconds)
        with self._cond:
            self.cuts += 1
        self._reset_links(count=True)

    def down(self) -> None:
        """Refuse new connections and reset the live ones until :meth:`up`."""
        self._request(up=False, up_at=None)
        with self._cond:
            self.cuts += 1
        self._reset_links(count=True)

    def up(self) -> None:
        """Accept connections again; returns once the port is open."""
        self._request(up=True, up_at=None)

    def drop_connections(self) -> int:
        """Reset every live connection, keep accepting new ones; returns how many were reset."""
        return self._reset_links(count=True)

    # -- state -----------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """The port is open (false during a cut or after down())."""
        with self._cond:
            return self._listening

    @property
    def active(self) -> int:
        """Connections being forwarded now."""
        with self._cond:
            return len(self._links)

    def url_for(self, url: str) -> str:
        """``url`` pointing at the proxy instead of the target; everything else kept as is.

        Raises ``ValueError`` when ``url`` does not point at this proxy's target: a test would
        otherwise talk to another server through the wrong door.
        """
        if _target_of(url) != self.target:
            raise ValueError(f"{_target_of(url)} is not this proxy's target {self.target}")
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    # -- inside ----------------------------------------------------------------------------

    def _request(self, *, up: bool, up_at: float | None) -> None:
        """Ask the accept thread, which alone opens and closes the port, for a state; wait."""
        with self._cond:
            self._want_up, self._up_at = up, up_at
            self._requested += 1
            generation = self._requested
        self._wake()
        with self._cond:
            obeyed = self._cond.wait_for(
                lambda: self._obeyed >= generation or self._stopping, timeout=SETTLE_TIMEOUT
            )
        if not obeyed:
            raise RuntimeError(f"the proxy could not {'open' if up else 'close'} port {self.port}")

    def _accept_loop(self) -> None:
        listener = self._listener
        while True:
            with self._cond:
                if self._up_at is not None and time.monotonic() >= self._up_at:
                    self._want_up, self._up_at = True, None  # the cut is over
                want_up, up_at, generation = self._want_up, self._up_at, self._requested
                stopping = self._stopping
            if stopping or not want_up:
                if listener is not None:
                    listener.close()  # from now on, connecting is refused
                    listener = None
            elif listener is None:
                listener = self._bind_again()
            with self._cond:
                self._listening = listener is not None
                if self._listening == want_up:
                    self._obeyed = max(self._obeyed, generation)
                self._cond.notify_all()
            if stopping:
                return
            self._wait_and_accept(listener, want_up, up_at)

    def _wait_and_accept(
        self, listener: socket.socket | None, want_up: bool, up_at: float | None
    ) -> None:
        timeout = None
        if up_at is not None:
            timeout = max(0.0, up_at - time.monotonic())
        if want_up and listener is None:
            timeout = REBIND_INTERVAL
        assert self._wake_r is not None
        waiting_on = [self._wake_r] if listener is None else [self._wake_r, listener]
        readable, _, _ = select.select(waiting_on, [], [], timeout)
        if self._wake_r in readable:
            self._wake_r.recv(CHUNK)
        if listener is not None and listener in readable:
            self._accept(listener)

    def _accept(self, listener: socket.socket) -> None:
        try:
            client, _ = listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return  # the client gave up between select and accept
        client.setblocking(True)
        with self._cond:
            self.accepted += 1
            link = _Link(client, self.accepted, self)
            self._links.add(link)
        link.thread.start()

    def _bind(self) -> socket.socket:
        listener = socket.create_server((self.host, self.port))  # SO_REUSEADDR on POSIX
        listener.setblocking(False)
        return listener

    def _bind_again(self) -> socket.socket | None:
        try:
            return self._bind()
        except OSError:  # the port is busy for now: the loop tries again shortly
            return None

    def _reset_links(self, *, count: bool) -> int:
        """Reset every live connection and wait until each is closed (its RST sent)."""
        with self._cond:
            links = list(self._links)
            if count:
                self.dropped += len(links)
        for link in links:
            link.cut()
        grace_ends = time.monotonic() + RESET_GRACE
        for link in links:
            if not link.finished.wait(max(0.0, grace_ends - time.monotonic())):
                link.force()
        for link in links:
            link.thread.join(SETTLE_TIMEOUT)
        return len(links)

    def _forget(self, link: _Link) -> None:
        with self._cond:
            self._links.discard(link)

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # closed: the proxy has stopped
                self._wake_w.send(b"x")


def _target_of(url: str) -> tuple[str, int]:
    """The host and port a database or Redis URL points at (default ports filled in)."""
    parts = urlsplit(url)
    scheme = parts.scheme.partition("+")[0]  # "postgresql+psycopg" -> "postgresql"
    port = parts.port or DEFAULT_PORTS.get(scheme)
    if not parts.hostname or port is None:
        raise ValueError(f"no host and port in {url!r}")
    return parts.hostname, port
