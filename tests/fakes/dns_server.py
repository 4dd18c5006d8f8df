"""A tiny DNS server on loopback for tests: answers UDP queries from a dict of records.

``records`` maps a name to its records by type::

    {"drip.test": {"TXT": ["v=spf1 include:sendgrid.net ~all"]},
     "s1._domainkey.drip.test": {"CNAME": ["s1.domainkey.u1.wl1.sendgrid.net."]}}

Names match case-insensitively, with or without the final dot. A TXT value is the plain string
(quoted and cut into 255-byte character-strings here, as a zone would hold a long SPF record);
any other type is written as in a zone file. A name not in ``records`` answers NXDOMAIN; a name
without the type asked answers NOERROR with no records (NODATA), as a real server does.
:meth:`DnsServer.set_records` replaces the records while serving; :attr:`DnsServer.queries`
lists what was asked, as ``(name, type)``.

Built on dnspython's message parsing (``dns.message.from_wire``, ``make_response``); UDP only,
answers are small. No pytest in here.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Records = Mapping[str, Mapping[str, Sequence[str]]]
TTL = 60
TXT_PIECE = 255  # bytes in one character-string of a TXT record


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _zone_text(rdtype: str, value: str) -> str:
    if rdtype != "TXT":
        return value
    raw = value.encode()
    pieces = [raw[i : i + TXT_PIECE] for i in range(0, len(raw), TXT_PIECE)] or [b""]
    quoted = (p.decode().replace("\\", "\\\\").replace('"', '\\"') for p in pieces)
    return " ".join(f'"{piece}"' for piece in quoted)


class _Server(socketserver.ThreadingUDPServer):
    daemon_threads = True
    owner: DnsServer


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        data, sock = self.request
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return  # not a DNS message: a real server drops it too
        sock.sendto(self.server.owner.answer(query).to_wire(), self.client_address)


class DnsServer:
    """Serves ``records`` on 127.0.0.1 (port 0: a free one) in a thread until :meth:`stop`."""

    def __init__(self, records: Records | None = None) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, list[str]]] = {}
        self.queries: list[tuple[str, str]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.set_records(records or {})

    def set_records(self, records: Records) -> None:
        normalized = {
            _key(name): {rdtype.upper(): list(values) for rdtype, values in by_type.items()}
            for name, by_type in records.items()
        }
        with self._lock:
            self._records = normalized

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The response to ``query`` from the current records (authoritative)."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name, rdtype = _key(question.name.to_text()), dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, rdtype))
            by_type = self._records.get(name)
        if by_type is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif by_type.get(rdtype):
            texts = [_zone_text(rdtype, value) for value in by_type[rdtype]]
            response.answer.append(
                dns.rrset.from_text_list(question.name, TTL, "IN", rdtype, texts)
            )
        return response

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> DnsServer:
        if self._server is not None:
            raise RuntimeError("DNS server already started")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        # A short poll interval keeps stop() quick (shutdown waits for the next poll).
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="dns-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join()
        server.server_close()
        self._server = self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("DNS server not started")
        return int(self._server.server_address[1])

    @property
    def nameserver(self) -> str:
        """The server as ``DRIP_DNS_NAMESERVER`` takes it: ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
