"""SmtpBackend against real servers on loopback: aiosmtpd for delivery, reuse, refusals, TLS and
AUTH; :class:`~tests.fakes.smtp_faults.FaultySmtpServer` for byte-level faults at each stage of a
transaction (before the final dot: retried once; after it: unknown, never sent again)."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from drip.clock import FrozenClock
from drip.errors import PermanentBackendError, ThrottledBackendError, TransientBackendError
from drip.esp.base import Message, Recipient
from drip.esp.smtp import SmtpBackend, TlsMode
from tests.fakes.smtp_faults import Action, Drop, FaultySmtpServer, Reply, Silence, Step

WHEN = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
MESSAGE = Message(
    message_key="glute-accelerator/3",
    subject="Day 3, %%firstname.t%%",
    html="<p>Hi %%firstname%%</p>",
    text="Hi %%firstname.t%%",
    from_email="coach@example.com",
    from_name="Coach",
)


def person(n: int, email: str = "", name: str = "") -> Recipient:
    return Recipient(
        delivery_id=n,
        email=email or f"p{n}@example.org",
        name=name or f"P{n}",
        substitutions={"%%firstname%%": f"P{n}", "%%firstname.t%%": f"P{n}"},
        headers={
            "List-Unsubscribe": f"<https://example.com/u/{n}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


class Mailbox:
    """aiosmtpd handler: keeps what it receives; answers RCPT from ``replies`` by address."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], bytes, bool]] = []
        self.replies: dict[str, str] = {}

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        tls = session.ssl is not None
        self.received.append((str(envelope.mail_from), list(envelope.rcpt_tos), content, tls))
        return "250 Message accepted"


class CountingController(Controller):
    """Binds port 0 and counts connections (aiosmtpd builds one SMTP object per connection)."""

    connections = 0

    def factory(self) -> Any:
        self.connections += 1
        return super().factory()  # type: ignore[no-untyped-call]

    def _trigger_server(self) -> None:
        # Bound to port 0: learn the real port before aiosmtpd probes it.
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


Serve = Callable[..., CountingController]


@pytest.fixture
def serve() -> Iterator[Serve]:
    started: list[CountingController] = []

    def start(handler: Mailbox, port: int = 0, **smtp_kwargs: Any) -> CountingController:
        controller = CountingController(handler, hostname="127.0.0.1", port=port, **smtp_kwargs)
        controller.start()
        controller.connections = 0  # forget the controller's own readiness probe
        started.append(controller)
        return controller

    yield start
    for controller in started:
        if controller._thread is not None:
            controller.stop()


@pytest.fixture
def backends() -> Iterator[Callable[..., SmtpBackend]]:
    made: list[SmtpBackend] = []

    def make(port: int, tls: TlsMode = "none", timeout: float = 5.0, **kwargs: Any) -> SmtpBackend:
        backend = SmtpBackend(
            "127.0.0.1", port, tls=tls, timeout=timeout, clock=FrozenClock(WHEN), **kwargs
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_delivers_multipart_with_unsubscribe_headers(serve: Serve, backends: Any) -> None:
    box = Mailbox()
    ctl = serve(box)
    hostile = person(2, name="Eve\r\nBcc: x@evil.test")
    results = backends(ctl.port).send_batch(MESSAGE, [person(1), hostile])
    assert [r.ok for r in results] == [True, True]
    assert [(frm, to) for frm, to, _, _ in box.received] == [
        ("coach@example.com", ["p1@example.org"]),
        ("coach@example.com", ["p2@example.org"]),  # the envelope never comes from headers
    ]
    msg = email.message_from_bytes(box.received[0][2], policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["List-Unsubscribe"] == "<https://example.com/u/1>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Subject"] == "Day 3, P1"
    assert msg["Message-ID"] == results[0].provider_message_id


def test_connection_is_reused_across_batches(serve: Serve, backends: Any) -> None:
    ctl = serve(box := Mailbox())
    backend = backends(ctl.port)
    backend.send_batch(MESSAGE, [person(1), person(2)])
    backend.send_batch(MESSAGE, [person(3), person(4)])
    assert len(box.received) == 4
    assert ctl.connections == 1 and backend.connections_opened == 1


def test_reconnects_once_when_the_server_dropped_the_connection(
    serve: Serve, backends: Any
) -> None:
    ctl = serve(Mailbox())
    backend = backends(ctl.port)
    assert backend.send_batch(MESSAGE, [person(1)])[0].ok
    port = ctl.port
    ctl.stop()  # the kept connection dies with the server
    restarted = serve(box := Mailbox(), port=port)
    assert backend.send_batch(MESSAGE, [person(2)])[0].ok
    assert len(box.received) == 1 and restarted.connections == 1
    assert backend.connections_opened == 2


def test_refused_recipients_get_their_own_results(serve: Serve, backends: Any) -> None:
    box = Mailbox()
    box.replies = {
        "full@example.org": "450 4.2.2 Mailbox full",
        "gone@example.org": "550 5.1.1 No such user",
    }
    ctl = serve(box)
    batch = [person(1), person(2, "full@example.org"), person(3, "gone@example.org"), person(4)]
    ok, full, gone, last = backends(ctl.port).send_batch(MESSAGE, batch)
    assert ok.ok and last.ok
    assert (full.ok, full.transient, full.invalid_address) == (False, True, False)
    assert "450 4.2.2 Mailbox full" in str(full.error)
    assert (gone.ok, gone.transient, gone.invalid_address) == (False, False, True)
    assert "550 5.1.1 No such user" in str(gone.error)
    assert [to for _, to, _, _ in box.received] == [["p1@example.org"], ["p4@example.org"]]
    assert ctl.connections == 1  # a refusal does not cost the connection


def test_a_closing_server_after_a_success_is_reported_not_raised(
    serve: Serve, backends: Any
) -> None:
    box = Mailbox()
    box.replies = {"p2@example.org": "421 4.3.2 Service shutting down"}
    ctl = serve(box)
    backend = backends(ctl.port)
    first, second, third = backend.send_batch(MESSAGE, [person(1), person(2), person(3)])
    assert first.ok
    assert (second.ok, second.transient, third.ok, third.transient) == (False, True, False, True)
    assert backend.connections_opened == 2  # one reconnect, then give up on this batch
    # Nothing accepted yet in a batch: the same failure raises, for the caller to retry later,
    # and a server that keeps saying 421 asks every worker to slow down.
    with pytest.raises(ThrottledBackendError):
        backend.send_batch(MESSAGE, [person(2)])


def test_server_down_is_transient(backends: Any) -> None:
    with pytest.raises(TransientBackendError) as info:
        backends(closed_port()).send_batch(MESSAGE, [person(1)])
    assert isinstance(info.value.__cause__, OSError)


@contextmanager
def raw_server(greeting: bytes | None) -> Iterator[int]:
    """A one-connection TCP server that sends ``greeting`` (None: says nothing) and then waits
    for the client to hang up. Yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            if greeting is not None:
                conn.sendall(greeting)
            while conn.recv(1024):
                pass

    thread = threading.Thread(target=serve_one)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize(
    ("greeting", "error"),
    [
        (b"421 4.3.2 Too busy, try later\r\n", ThrottledBackendError),
        (b"450 4.3.2 Try again later\r\n", ThrottledBackendError),
        (b"554 5.3.2 No service for you\r\n", PermanentBackendError),
    ],
)
def test_greeting_refusals(greeting: bytes, error: type[Exception], backends: Any) -> None:
    with raw_server(greeting) as port, pytest.raises(error) as info:
        backends(port).send_batch(MESSAGE, [person(1)])
    assert greeting[:3].decode() in str(info.value)


def test_a_silent_server_times_out_as_transient() -> None:
    with raw_server(None) as port:
        backend = SmtpBackend("127.0.0.1", port, timeout=0.2, clock=FrozenClock(WHEN))
        with pytest.raises(TransientBackendError, match="timed out"):
            backend.send_batch(MESSAGE, [person(1)])
        backend.close()


def make_certificate(directory: Path) -> tuple[Path, Path, str]:
    """A self-signed certificate for 127.0.0.1 and localhost: cert file, key file, PEM text."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drip test smtp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file, pem.decode()


@pytest.fixture
def tls_server(tmp_path: Path, serve: Serve) -> tuple[CountingController, Mailbox, str]:
    cert_file, key_file, pem = make_certificate(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    box = Mailbox()
    ctl = serve(box, tls_context=server_context, require_starttls=True)
    return ctl, box, pem


def test_starttls_with_a_trusted_self_signed_certificate(tls_server: Any, backends: Any) -> None:
    ctl, box, pem = tls_server
    client_context = ssl.create_default_context(cadata=pem)
    backend = backends(ctl.port, tls="starttls", ssl_context=client_context)
    assert backend.send_batch(MESSAGE, [person(1)])[0].ok
    assert box.received[0][3] is True  # the message travelled over TLS


def test_implicit_tls(tmp_path: Path, serve: Serve, backends: Any) -> None:
    cert_file, key_file, pem = make_certificate(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    box = Mailbox()
    ctl = serve(box, ssl_context=server_context)
    backend = backends(ctl.port, tls="ssl", ssl_context=ssl.create_default_context(cadata=pem))
    assert backend.send_batch(MESSAGE, [person(1)])[0].ok
    assert len(box.received) == 1


def test_starttls_with_an_untrusted_certificate_is_permanent(
    tls_server: Any, backends: Any
) -> None:
    ctl, box, _ = tls_server
    backend = backends(ctl.port, tls="starttls", ssl_context=ssl.create_default_context())
    with pytest.raises(PermanentBackendError, match="certificate"):
        backend.send_batch(MESSAGE, [person(1)])
    assert box.received == []


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    good = getattr(data, "login", None) == b"drip" and getattr(data, "password", None) == b"s3cret"
    # handled=False makes aiosmtpd send its own "535 5.7.8 Authentication credentials invalid".
    return AuthResult(success=good, handled=False)


@pytest.mark.parametrize(("password", "ok"), [("s3cret", True), ("wrong", False)])
def test_auth(serve: Serve, backends: Any, password: str, ok: bool) -> None:
    box = Mailbox()
    ctl = serve(box, authenticator=authenticator, auth_require_tls=False)
    backend = backends(ctl.port, username="drip", password=password)
    if ok:
        assert backend.send_batch(MESSAGE, [person(1)])[0].ok
        return
    with pytest.raises(PermanentBackendError, match="535") as info:
        backend.send_batch(MESSAGE, [person(1)])
    assert info.value.status == 535 and box.received == []
    with pytest.raises(PermanentBackendError, match="535"):
        backend.probe()


def test_close_quits_and_is_safe_twice(serve: Serve, backends: Any) -> None:
    ctl = serve(Mailbox())
    backend = backends(ctl.port)
    backend.send_batch(MESSAGE, [person(1)])
    backend.close()
    backend.close()
    assert backend.send_batch(MESSAGE, [person(2)])[0].ok  # opens a fresh connection
    assert backend.connections_opened == 2


# --- Faults at each stage of a transaction, from a server that misbehaves on purpose -----------


@pytest.fixture
def faulty() -> Iterator[FaultySmtpServer]:
    with FaultySmtpServer() as server:
        yield server


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    outcome = call()
    return outcome, time.monotonic() - started


def test_no_reply_to_the_final_dot_is_unknown_and_never_sent_again(
    faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script("DOT", Reply("250 2.0.0 OK", delay=2.0), connection=1)
    backend = backends(faulty.port, timeout=0.5)
    (first, second, third), elapsed = timed(
        lambda: backend.send_batch(MESSAGE, [person(1), person(2), person(3)])
    )
    assert (first.ok, first.unknown, first.transient) == (False, True, False)
    assert "may have been delivered" in str(first.error)
    # The batch stops at the message in doubt: the others certainly were not sent.
    assert [(r.ok, r.transient, r.unknown) for r in (second, third)] == [(False, True, False)] * 2
    assert elapsed < 1.5
    assert faulty.received == {"p1@example.org": 1} and faulty.connections == 1
    # The connection in doubt is not reused, and the message in doubt is not in the next batch.
    assert backend.send_batch(MESSAGE, [person(2)])[0].ok
    assert faulty.received == {"p1@example.org": 1, "p2@example.org": 1}
    assert faulty.connections == 2


def test_a_reply_trickled_after_the_final_dot_is_cut_at_the_deadline(
    faulty: FaultySmtpServer, backends: Any
) -> None:
    # 33 bytes at 0.3 s each: 10 s of a server that is never silent for a whole read timeout.
    faulty.script("DOT", Reply("250 2.0.0 OK: queued as 4B2F1A", trickle=0.3))
    backend = backends(faulty.port, timeout=1.0)
    [result], elapsed = timed(lambda: backend.send_batch(MESSAGE, [person(1)]))
    assert (result.ok, result.unknown) == (False, True)
    assert elapsed < 2.5
    assert faulty.received == {"p1@example.org": 1} and faulty.connections == 1


@pytest.mark.parametrize(
    "reply", [Drop(), Reply("hello?")], ids=["reset after the dot", "unreadable reply"]
)
def test_no_usable_reply_to_the_final_dot_is_unknown(
    reply: Action, faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script("DOT", reply)
    [result] = backends(faulty.port).send_batch(MESSAGE, [person(1)])
    assert (result.ok, result.unknown) == (False, True)
    assert faulty.received == {"p1@example.org": 1} and faulty.connections == 1


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize(
    "fault",
    [Drop(), Silence(), Reply("421 4.3.2 Shutting down")],
    ids=["reset", "silence past the deadline", "421"],
)
def test_a_failure_before_the_final_dot_is_retried_once_on_a_fresh_connection(
    step: Step, fault: Action, faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script(step, fault, connection=1)
    backend = backends(faulty.port, timeout=0.5)
    [result] = backend.send_batch(MESSAGE, [person(1)])
    assert result.ok
    assert faulty.received == {"p1@example.org": 1}
    assert faulty.connections == 2 and backend.connections_opened == 2


def test_a_354_later_than_the_deadline_means_not_sent(
    faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script("DATA", Reply("354 Go ahead", delay=1.0), connection=1)
    [result], elapsed = timed(
        lambda: backends(faulty.port, timeout=0.5).send_batch(MESSAGE, [person(1)])
    )
    assert result.ok and elapsed < 1.5
    assert faulty.received == {"p1@example.org": 1} and faulty.connections == 2


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Drop(), TransientBackendError), (Reply("421 4.7.0 Too many"), ThrottledBackendError)],
    ids=["reset", "421"],
)
def test_a_failure_before_the_dot_twice_raises(
    fault: Action, error: type[Exception], faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script("RCPT", fault)
    with pytest.raises(error) as info:
        backends(faulty.port).send_batch(MESSAGE, [person(1), person(2)])
    assert type(info.value) is error
    assert faulty.received == {} and faulty.connections == 2


@pytest.mark.parametrize(
    ("reply", "transient", "invalid"),
    [
        ("450 4.2.2 Mailbox full, try later", True, False),
        ("550 5.1.1 No such user", False, True),
        ("550 No such user here", False, True),
        ("551 User not local", False, True),
        ("553 5.1.3 Bad destination mailbox address", False, True),
        ("554 5.1.10 Recipient address has null MX", False, True),
        ("550 5.7.1 Relaying denied", False, False),  # about us, not about the address
        ("552 5.2.2 Mailbox full", False, False),
    ],
)
def test_a_refused_recipient_gets_its_own_result(
    reply: str, transient: bool, invalid: bool, faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script("RCPT", Reply(reply), address="x@example.org")
    batch = [person(1), person(2, "x@example.org"), person(3)]
    ok, refused, after = backends(faulty.port).send_batch(MESSAGE, batch)
    assert ok.ok and after.ok
    assert (refused.ok, refused.transient, refused.invalid_address, refused.unknown) == (
        False,
        transient,
        invalid,
        False,
    )
    assert reply in str(refused.error)
    assert faulty.received == {"p1@example.org": 1, "p3@example.org": 1}
    assert faulty.connections == 1 and "RSET" in faulty.commands


@pytest.mark.parametrize(
    ("reply", "transient", "connections"),
    [
        ("451 4.3.0 Queue file write error", True, 1),
        ("554 5.6.0 Message rejected as spam", False, 1),
        ("421 4.3.2 Shutting down", True, 2),  # refused and closing: the next one reconnects
    ],
)
def test_a_refusal_of_the_message_after_the_dot_is_its_result(
    reply: str, transient: bool, connections: int, faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script("DOT", Reply(reply), address="x@example.org")
    refused, after = backends(faulty.port).send_batch(
        MESSAGE, [person(1, "x@example.org"), person(2)]
    )
    assert (refused.ok, refused.transient, refused.unknown, refused.invalid_address) == (
        False,
        transient,
        False,
        False,
    )
    assert after.ok
    assert faulty.received == {"x@example.org": 1, "p2@example.org": 1}  # never re-sent
    assert faulty.connections == connections


def test_a_refused_sender_raises_for_the_whole_batch(
    faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script("MAIL", Reply("553 5.7.1 Sender address rejected"))
    with pytest.raises(PermanentBackendError, match="553") as info:
        backends(faulty.port).send_batch(MESSAGE, [person(1), person(2)])
    assert info.value.status == 553 and faulty.received == {}


def test_a_trickled_greeting_is_cut_at_the_connect_deadline(
    faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script("greeting", Reply("220 slow.test ESMTP at your service", trickle=0.3))
    backend = backends(faulty.port, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TransientBackendError, match="timed out"):
        backend.send_batch(MESSAGE, [person(1)])
    assert time.monotonic() - started < 2.5
    assert faulty.received == {}


def test_probe_says_noop_and_sends_nothing(faulty: FaultySmtpServer, backends: Any) -> None:
    backend = backends(faulty.port)
    backend.probe()
    backend.probe()
    assert faulty.commands.count("NOOP") == 2 and "MAIL" not in faulty.commands
    assert faulty.received == {}
    assert backend.send_batch(MESSAGE, [person(1)])[0].ok
    assert faulty.connections == 1  # the probe's connection is kept for sending


def test_probe_replaces_a_stale_connection(faulty: FaultySmtpServer, backends: Any) -> None:
    faulty.script("NOOP", Drop(), connection=1)
    backend = backends(faulty.port)
    assert backend.send_batch(MESSAGE, [person(1)])[0].ok
    backend.probe()
    assert faulty.connections == 2


@pytest.mark.parametrize(
    ("step", "fault", "error"),
    [
        ("greeting", Reply("421 4.3.2 Too busy"), ThrottledBackendError),
        ("greeting", Reply("554 5.3.2 Go away"), PermanentBackendError),
        ("greeting", Silence(), TransientBackendError),
        ("EHLO", Drop(), TransientBackendError),
        ("NOOP", Reply("421 4.3.2 Closing"), ThrottledBackendError),
        ("NOOP", Reply("502 5.5.1 No NOOP here"), PermanentBackendError),
    ],
    ids=[
        "421 greeting",
        "554 greeting",
        "silent greeting",
        "reset at EHLO",
        "421 NOOP",
        "502 NOOP",
    ],
)
def test_probe_raises_what_sending_would(
    step: Step, fault: Action, error: type[Exception], faulty: FaultySmtpServer, backends: Any
) -> None:
    faulty.script(step, fault)
    with pytest.raises(error) as info:
        backends(faulty.port, timeout=0.5).probe()
    assert type(info.value) is error
    assert faulty.received == {}


def test_probe_of_a_server_that_is_down_is_transient(backends: Any) -> None:
    with pytest.raises(TransientBackendError) as info:
        backends(closed_port()).probe()
    assert type(info.value) is TransientBackendError
