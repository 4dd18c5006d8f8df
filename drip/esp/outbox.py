"""The file outbox: every email as an .eml file plus a JSON-lines manifest, for development.

Layout of ``directory``: ``NNNNNN-<message-key-slug>-d<delivery id>.eml`` per recipient (a running
counter that continues across restarts), ``manifest.jsonl`` with one JSON object per email (keys
``to``, ``name``, ``message_key``, ``sequence``, ``subject``, ``delivery_id``, ``sent_at_utc``,
``time_zone``, ``sent_at_local``, ``file``) and, on request, ``index.html`` (:func:`write_index`).
Safe for concurrent senders in one process; files are never overwritten, even by another process.
"""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drip.clock import Clock
from drip.errors import TransientBackendError
from drip.esp.base import EmailBackend, Message, Recipient, SendResult, personalize
from drip.esp.mime import InvalidAddress, build_mime, sender_domain

MANIFEST = "manifest.jsonl"
INDEX = "index.html"
_COUNTER_FILE = re.compile(r"(\d{6,})-.*\.eml")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    """``glute-accelerator/3`` -> ``glute-accelerator-3``; never empty."""
    return _NOT_SLUG.sub("-", text.lower()).strip("-")[:60] or "message"


def _zone(name: str | None) -> tuple[str, ZoneInfo]:
    # An unknown zone must not stop a send: the manifest then shows UTC, and says so.
    if name:
        try:
            return name, ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return "UTC", ZoneInfo("UTC")


class OutboxBackend(EmailBackend):
    """Writes each recipient's message to ``directory`` instead of sending it."""

    name = "outbox"

    def __init__(self, directory: Path, *, clock: Clock) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._lock = threading.Lock()
        self._next: int | None = None  # read from the directory on first use

    def send_batch(self, message: Message, recipients: Sequence[Recipient]) -> list[SendResult]:
        """Write one file per recipient; an unwritable directory raises TransientBackendError.

        Once a file of this batch is written, a failure is reported in the remaining results
        instead of raised, so a retry cannot duplicate what was written.
        """
        results: list[SendResult] = []
        for i, recipient in enumerate(recipients):
            now = self._clock().astimezone(UTC)
            try:
                mime = build_mime(
                    message,
                    recipient,
                    date=now,
                    message_id_domain=sender_domain(message.from_email),
                )
            except InvalidAddress as err:
                results.append(SendResult(recipient.delivery_id, False, error=str(err)))
                continue
            try:
                self._write(message, recipient, mime.as_bytes(), now)
            except OSError as err:  # a full or unwritable disk may recover: retry later
                error = f"outbox {self.directory}: {err}"
                if not any(r.ok for r in results):
                    raise TransientBackendError(error) from err
                rest = recipients[i:]
                results += [
                    SendResult(r.delivery_id, False, error=error, transient=True) for r in rest
                ]
                break
            message_id = str(mime["Message-ID"])
            results.append(SendResult(recipient.delivery_id, True, provider_message_id=message_id))
        return results

    def _write(self, message: Message, recipient: Recipient, data: bytes, now: datetime) -> str:
        stem = f"{slugify(message.message_key)}-d{recipient.delivery_id}.eml"
        with self._lock:
            if self._next is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._next = _last_counter(self.directory) + 1
            while True:
                name = f"{self._next:06d}-{stem}"
                self._next += 1
                try:
                    # "x": never overwrite, even a file another process wrote meanwhile.
                    with open(self.directory / name, "xb") as fh:
                        fh.write(data)
                    break
                except FileExistsError:
                    continue
            zone_name, zone = _zone(recipient.time_zone)
            entry = {
                "to": recipient.email,
                "name": recipient.name,
                "message_key": message.message_key,
                # "glute-accelerator/3" -> "glute-accelerator"; one-off mails have no sequence.
                "sequence": message.message_key.rpartition("/")[0] or None,
                "subject": personalize(message.subject, recipient.substitutions),
                "delivery_id": recipient.delivery_id,
                "sent_at_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "time_zone": zone_name,
                "sent_at_local": now.astimezone(zone).isoformat(timespec="seconds"),
                "file": name,
            }
            # One write of one line: a crash can cut only the last line, which readers skip.
            with open(self.directory / MANIFEST, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
            return name


def _last_counter(directory: Path) -> int:
    numbers = [
        int(m.group(1)) for p in directory.iterdir() if (m := _COUNTER_FILE.fullmatch(p.name))
    ]
    return max(numbers, default=0)


def read_manifest(directory: Path) -> list[dict[str, Any]]:
    """The manifest's entries, oldest first; blank or broken lines (a crash mid-write) skipped."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def write_index(directory: Path) -> Path:
    """Write ``index.html`` listing the manifest, newest first; returns its path.

    Every value is HTML-escaped and the link is percent-encoded: subjects and names come from
    subscribers.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in reversed(read_manifest(directory)):
        cells = (
            html.escape(str(e.get("sent_at_local", ""))),
            html.escape(str(e.get("to", ""))),
            html.escape(str(e.get("subject", ""))),
        )
        href = html.escape(quote(str(e.get("file", ""))), quote=True)
        rows.append(
            f"<tr><td>{cells[0]}</td><td>{cells[1]}</td><td>{cells[2]}</td>"
            f'<td><a href="{href}">.eml</a></td></tr>'
        )
    page = (
        "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>drip outbox</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}td,th{padding:4px 10px;"
        "text-align:left}</style><h1>drip outbox</h1><table><tr><th>Local time</th><th>To</th>"
        "<th>Subject</th><th>File</th></tr>\n" + "\n".join(rows) + "\n</table></html>\n"
    )
    path = directory / INDEX
    tmp = directory / (INDEX + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # readers never see half a page
    return path
