"""The TCP fault proxy (tests/fakes/tcp_proxy.py): forwarding, cuts that look like a restart,
stopping cleanly, and the same through real PostgreSQL and Redis (the shared servers are never
restarted: only the proxy in front of them is)."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from tests.fakes.tcp_proxy import TcpProxy
from tests.worker_harness import wait_for


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    """An echo server on loopback: the simplest target to proxy."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, name="echo-server")
    thread.start()
    host, port = server.server_address[:2]
    yield str(host), int(port)
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=2)


def echoes(sock: socket.socket, data: bytes = b"ping") -> bool:
    sock.sendall(data)
    back = b""
    while len(back) < len(data) and (chunk := sock.recv(65536)):
        back += chunk
    return back == data


def answers(proxy: TcpProxy) -> bool:
    """A fresh connection through the proxy gets its bytes echoed."""
    try:
        with connect(proxy) as sock:
            return echoes(sock)
    except OSError:
        return False


def proxy_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tcp-proxy")]


def test_forwards_both_ways_and_counts_connections(echo: tuple[str, int]) -> None:
    with TcpProxy(*echo) as proxy:
        with connect(proxy) as one, connect(proxy) as two:
            assert echoes(one, b"hello") and echoes(two, b"world" * 50_000)
            assert proxy.accepted == 2 and proxy.active == 2
        wait_for(lambda: proxy.active == 0, timeout=5, what="both links closed")
        assert (proxy.cuts, proxy.dropped) == (0, 0)


def test_cut_resets_live_connections_and_refuses_new_ones_for_a_while(
    echo: tuple[str, int],
) -> None:
    with TcpProxy(*echo) as proxy, connect(proxy) as live:
        assert echoes(live)
        started = time.monotonic()
        proxy.cut(1.0)
        with pytest.raises(ConnectionResetError):  # a RST, not a polite close
            echoes(live)
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        assert not proxy.accepting
        wait_for(lambda: answers(proxy), timeout=5, what="the proxy accepting again")
        assert time.monotonic() - started >= 1.0
        assert proxy.accepting
        assert (proxy.accepted, proxy.cuts, proxy.dropped) == (2, 1, 1)


def test_down_holds_until_up(echo: tuple[str, int]) -> None:
    with TcpProxy(*echo) as proxy, connect(proxy) as live:
        assert echoes(live)
        proxy.down()
        with pytest.raises(ConnectionResetError):
            echoes(live)
        time.sleep(0.2)  # deliberately a fixed wait: "still down" cannot be polled for
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        proxy.up()
        assert proxy.accepting and answers(proxy)  # up() returns once the port is open


def test_drop_connections_keeps_accepting(echo: tuple[str, int]) -> None:
    with TcpProxy(*echo) as proxy, connect(proxy) as first, connect(proxy) as second:
        assert echoes(first) and echoes(second)
        assert proxy.drop_connections() == 2
        with pytest.raises(ConnectionResetError):
            echoes(first)
        assert proxy.accepting and answers(proxy)
        assert (proxy.cuts, proxy.dropped) == (0, 2)


def test_cut_is_quick_even_when_a_client_stopped_reading() -> None:
    # The target floods a client that reads nothing: the proxy's pump blocks writing to it,
    # where shutting down reading cannot wake it.
    flood = socket.create_server(("127.0.0.1", 0))
    stop_flooding = threading.Event()

    def serve() -> None:
        conn, _ = flood.accept()
        with conn, contextlib.suppress(OSError):
            while not stop_flooding.is_set():
                conn.sendall(b"x" * 65536)

    flooder = threading.Thread(target=serve, name="flood-server")
    flooder.start()
    try:
        with TcpProxy("127.0.0.1", int(flood.getsockname()[1])) as proxy:
            client = connect(proxy)
            client.recv(1)
            time.sleep(0.3)  # deliberately a fixed wait: for the buffers to fill up
            started = time.monotonic()
            proxy.cut(0.1)
            assert time.monotonic() - started < 1.5
            assert proxy.active == 0
            client.close()
    finally:
        stop_flooding.set()
        flooder.join(timeout=5)
        flood.close()


def test_a_target_that_is_down_resets_the_client() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed_port = int(placeholder.getsockname()[1])
    with TcpProxy("127.0.0.1", closed_port) as proxy:
        # The reset can arrive before connect() has returned (a loaded machine polls the
        # connecting socket late and reads ECONNRESET from it) or at the first exchange.
        with pytest.raises(ConnectionResetError), connect(proxy) as client:
            echoes(client)
        wait_for(lambda: proxy.active == 0, timeout=5, what="the failed link closed")


def test_stop_is_quick_resets_everything_and_leaves_no_thread(echo: tuple[str, int]) -> None:
    proxy = TcpProxy(*echo).start()
    live = connect(proxy)
    assert echoes(live) and proxy_threads()
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 1.0
    assert proxy_threads() == []
    with pytest.raises(ConnectionResetError):
        echoes(live)
    live.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    proxy.stop()  # twice is fine


def test_stop_during_a_cut(echo: tuple[str, int]) -> None:
    proxy = TcpProxy(*echo).start()
    proxy.cut(30)
    proxy.stop()
    assert proxy_threads() == []


def test_url_for_points_urls_at_the_proxy() -> None:
    pg = TcpProxy.for_url("postgresql+psycopg://postgres:s%40cret@127.0.0.1:5432/drip_test")
    assert pg.target == ("127.0.0.1", 5432)
    pg.port = 40001  # as start() would set it
    assert (
        pg.url_for("postgresql+psycopg://postgres:s%40cret@127.0.0.1:5432/drip_test?x=1")
        == "postgresql+psycopg://postgres:s%40cret@127.0.0.1:40001/drip_test?x=1"
    )
    cache = TcpProxy.for_url("redis://127.0.0.1/14")  # the default port
    cache.port = 40002
    assert cache.target == ("127.0.0.1", 6379)
    assert cache.url_for("redis://127.0.0.1:6379/14") == "redis://127.0.0.1:40002/14"
    with pytest.raises(ValueError, match="not this proxy's target"):
        cache.url_for("redis://127.0.0.1:6380/14")


# --- Real servers behind the proxy --------------------------------------------------------------


def pg_answers(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            return bool(conn.scalar(text("select 1")) == 1)
    except OperationalError:
        return False


@pytest.mark.postgres
def test_postgresql_through_a_cut(pg_engine: Engine) -> None:
    url = pg_engine.url.render_as_string(hide_password=False)
    with TcpProxy.for_url(url) as proxy:
        engine = create_engine(
            proxy.url_for(url), poolclass=NullPool, connect_args={"connect_timeout": 2}
        )
        try:
            with engine.connect() as live:
                assert live.scalar(text("select 1")) == 1
                proxy.cut(2.0)
                with pytest.raises(OperationalError):
                    live.scalar(text("select 1"))
            with pytest.raises(OperationalError, match="refused"):
                engine.connect()
            wait_for(lambda: pg_answers(engine), timeout=10, what="PostgreSQL through the proxy")
            assert (proxy.cuts, proxy.dropped) == (1, 1)
        finally:
            engine.dispose()


def redis_client(url: str) -> redis.Redis:
    # No retries: the test wants to see each failure, not redis-py papering over it.
    return redis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_timeout=2, socket_connect_timeout=2
    )


def redis_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.mark.redis
def test_redis_through_a_cut(redis_url: str) -> None:
    with TcpProxy.for_url(redis_url) as proxy:
        client = redis_client(proxy.url_for(redis_url))
        try:
            assert client.ping()
            proxy.cut(2.0)
            with pytest.raises(redis.ConnectionError):
                client.ping()  # the pooled connection was reset
            with pytest.raises(redis.ConnectionError, match="refused"):
                client.ping()  # a new one is refused
            wait_for(lambda: redis_answers(client), timeout=10, what="Redis through the proxy")
            assert (proxy.cuts, proxy.dropped) == (1, 1)
        finally:
            client.close()
