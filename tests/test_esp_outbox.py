"""The file outbox: .eml files, the manifest, index.html, the counter across restarts.
Also make_backend, whose default is the outbox."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import threading
import typing
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest
from pydantic import SecretStr

from drip.clock import FrozenClock
from drip.errors import SettingsError, TransientBackendError
from drip.esp import BACKENDS, make_backend
from drip.esp.base import Message, Recipient
from drip.esp.memory import MemoryBackend
from drip.esp.outbox import MANIFEST, OutboxBackend, read_manifest, write_index
from drip.esp.sendgrid import SendGridBackend
from drip.esp.smtp import SmtpBackend
from drip.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

# 2025-03-10 12:00 UTC: Los Angeles is on daylight time (-07:00) since March 9.
WHEN = datetime(2025, 3, 10, 12, 0, 5, tzinfo=UTC)

MESSAGE = Message(
    message_key="glute-accelerator/3",
    subject="Day 3 for %%firstname.t%%",
    html="<p>Hi %%firstname%%</p>",
    text="Hi %%firstname.t%%",
    from_email="coach@example.com",
    from_name="Coach",
)


def person(delivery_id: int, first: str, zone: str | None = None, email: str = "") -> Recipient:
    return Recipient(
        delivery_id=delivery_id,
        email=email or f"p{delivery_id}@example.org",
        name=first,
        substitutions={"%%firstname%%": first, "%%firstname.t%%": first},
        headers={"List-Unsubscribe": f"<https://example.com/u/{delivery_id}>"},
        time_zone=zone,
    )


@pytest.fixture
def outbox(tmp_path: Path) -> OutboxBackend:
    return OutboxBackend(tmp_path / "outbox", clock=FrozenClock(WHEN))


def test_one_eml_per_recipient_and_a_manifest_line_each(outbox: OutboxBackend) -> None:
    batch = [
        person(57, "Ana", "America/Los_Angeles"),
        person(58, "Bo"),
        person(59, "Cy", "Mars/Base"),
    ]
    results = outbox.send_batch(MESSAGE, batch)
    assert [r.ok for r in results] == [True, True, True]
    names = sorted(p.name for p in outbox.directory.glob("*.eml"))
    assert names == [
        "000001-glute-accelerator-3-d57.eml",
        "000002-glute-accelerator-3-d58.eml",
        "000003-glute-accelerator-3-d59.eml",
    ]
    entries = read_manifest(outbox.directory)
    assert entries[0] == {
        "to": "p57@example.org",
        "name": "Ana",
        "message_key": "glute-accelerator/3",
        "sequence": "glute-accelerator",
        "subject": "Day 3 for Ana",
        "delivery_id": 57,
        "sent_at_utc": "2025-03-10T12:00:05Z",
        "time_zone": "America/Los_Angeles",
        "sent_at_local": "2025-03-10T05:00:05-07:00",
        "file": "000001-glute-accelerator-3-d57.eml",
    }
    assert (entries[1]["time_zone"], entries[1]["sent_at_local"]) == (
        "UTC",
        "2025-03-10T12:00:05+00:00",
    )
    assert entries[2]["time_zone"] == "UTC"  # an unknown zone does not stop the send

    eml = email.message_from_bytes(
        (outbox.directory / names[0]).read_bytes(), policy=policy.default
    )
    assert eml["To"] == "Ana <p57@example.org>"
    assert eml["Message-ID"] == results[0].provider_message_id
    assert eml["List-Unsubscribe"] == "<https://example.com/u/57>"
    assert eml["Message-ID"].endswith("@example.com>")  # aligned with the From domain


def test_counter_continues_after_a_restart(outbox: OutboxBackend) -> None:
    outbox.send_batch(MESSAGE, [person(1, "A"), person(2, "B")])
    again = OutboxBackend(outbox.directory, clock=FrozenClock(WHEN))
    again.send_batch(MESSAGE, [person(3, "C")])
    assert (outbox.directory / "000003-glute-accelerator-3-d3.eml").exists()
    assert [e["delivery_id"] for e in read_manifest(outbox.directory)] == [1, 2, 3]


def test_concurrent_senders_never_share_a_file(outbox: OutboxBackend) -> None:
    def send(start: int) -> None:
        outbox.send_batch(MESSAGE, [person(start + i, "X") for i in range(25)])

    threads = [threading.Thread(target=send, args=(n * 100,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    files = sorted(p.name for p in outbox.directory.glob("*.eml"))
    assert len(files) == 200
    assert [f[:6] for f in files] == [f"{n:06d}" for n in range(1, 201)]
    entries = read_manifest(outbox.directory)
    assert sorted(e["file"] for e in entries) == files


def test_manifest_reader_skips_a_torn_last_line(outbox: OutboxBackend) -> None:
    outbox.send_batch(MESSAGE, [person(1, "A")])
    with open(outbox.directory / MANIFEST, "a", encoding="utf-8") as fh:
        fh.write('{"to": "half')
    assert len(read_manifest(outbox.directory)) == 1


def test_index_html_escapes_everything(outbox: OutboxBackend) -> None:
    hostile = '<script>alert("x")</script>'
    outbox.send_batch(MESSAGE, [person(1, hostile, "Europe/Paris", email="a&b@example.org")])
    outbox.send_batch(MESSAGE, [person(2, "Bo")])
    page = write_index(outbox.directory).read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "Day 3 for &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "a&amp;b@example.org" in page
    assert "2025-03-10T13:00:05+01:00" in page  # local time in the recipient's zone
    assert '<a href="000001-glute-accelerator-3-d1.eml">' in page
    assert page.index("d2.eml") < page.index("d1.eml")  # newest first


def test_unwritable_directory_is_transient(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    backend = OutboxBackend(blocker, clock=FrozenClock(WHEN))
    with pytest.raises(TransientBackendError) as info:
        backend.send_batch(MESSAGE, [person(1, "A")])
    assert isinstance(info.value.__cause__, OSError)


def test_invalid_address_fails_alone(outbox: OutboxBackend) -> None:
    bad = person(2, "B", email="b@example.org, c@evil.test")
    results = outbox.send_batch(MESSAGE, [person(1, "A"), bad, person(3, "C")])
    assert [(r.ok, r.transient) for r in results] == [(True, False), (False, False), (True, False)]
    assert len(list(outbox.directory.glob("*.eml"))) == 2


# -- make_backend ----------------------------------------------------------------------------


def settings(**values: object) -> Settings:
    values.setdefault("sendgrid_api_key", None)
    return Settings(**values)  # type: ignore[arg-type]


def test_make_backend_picks_by_setting(tmp_path: Path) -> None:
    clock = FrozenClock(WHEN)
    outbox = make_backend(settings(email_backend="outbox", outbox_dir=tmp_path), clock=clock)
    assert isinstance(outbox, OutboxBackend) and outbox.directory == tmp_path
    assert isinstance(make_backend(settings(email_backend="memory")), MemoryBackend)
    smtp = make_backend(
        settings(email_backend="smtp", smtp_port=2525, smtp_password=SecretStr("pw")), clock=clock
    )
    assert isinstance(smtp, SmtpBackend) and smtp.port == 2525
    smtp.close()  # never connected: nothing to do, must not fail
    sendgrid = make_backend(
        settings(email_backend="sendgrid", sendgrid_api_key=SecretStr("SG.x"), sendgrid_timeout=3)
    )
    assert isinstance(sendgrid, SendGridBackend)


@pytest.mark.parametrize("key", [None, "", "   "])
def test_sendgrid_without_key_names_the_variable(key: str | None) -> None:
    value = SecretStr(key) if key is not None else None
    with pytest.raises(SettingsError, match="DRIP_SENDGRID_API_KEY"):
        make_backend(settings(email_backend="sendgrid", sendgrid_api_key=value))


def test_every_backend_setting_has_a_factory() -> None:
    choices = typing.get_args(Settings.model_fields["email_backend"].annotation)
    assert sorted(BACKENDS) == sorted(choices)


def test_an_unknown_backend_names_the_variable() -> None:
    unchecked = Settings.model_construct(email_backend="carrier-pigeon")
    with pytest.raises(
        SettingsError, match=r"DRIP_EMAIL_BACKEND: unknown backend 'carrier-pigeon'"
    ):
        make_backend(unchecked)


HEAVY = ("sendgrid", "python_http_client", "drip.esp.sendgrid", "drip.esp.smtp", "smtplib")


def test_the_outbox_loads_neither_sendgrid_nor_smtp(tmp_path: Path) -> None:
    # A fresh interpreter: this one has imported every backend already.
    script = (
        "import sys\n"
        "from drip.esp import make_backend\n"
        "from drip.settings import Settings\n"
        f"make_backend(Settings(email_backend='outbox', outbox_dir={str(tmp_path)!r}))\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DRIP_")}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "[]"


def test_manifest_is_json_lines(outbox: OutboxBackend) -> None:
    outbox.send_batch(MESSAGE, [person(1, "Zoë")])
    line = (outbox.directory / MANIFEST).read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(line)["name"] == "Zoë"
