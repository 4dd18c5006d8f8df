"""Configuring outgoing webhooks: ``DRIP_OUTGOING_WEBHOOKS`` and ``content/webhooks.toml``.

A bad entry stops the start with a message naming the variable or the file, the entry and its
key, and never the secret; ``drip`` commands exit 2 with it, without a traceback.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from drip.cli.main import main
from drip.errors import SettingsError
from drip.outgoing import load_endpoints
from drip.outgoing.config import endpoints_file
from drip.outgoing_endpoints import Endpoint
from drip.settings import load_settings
from tests.conftest import REPO, make_settings

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SHORT = "whsec_" + base64.b64encode(b"sixteen bytes!!!").decode()


pytestmark = pytest.mark.usefixtures("clean_env")  # conftest: no DRIP_* from outside


def entry(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "url": "https://crm.example.com/hooks/drip",
        "events": ["subscriber.confirmed", "purchase.completed"],
        "secret": SECRET,
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def problem(monkeypatch: pytest.MonkeyPatch, value: str) -> str:
    monkeypatch.setenv("DRIP_OUTGOING_WEBHOOKS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


def test_endpoints_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_SECRET", SECRET)
    second = entry(url="https://stats.example.com/in", secret=None, secret_env="ANALYTICS_SECRET")
    monkeypatch.setenv("DRIP_OUTGOING_WEBHOOKS", json.dumps([entry(), second]))

    endpoints = load_settings().outgoing_webhooks

    assert endpoints == (
        Endpoint(
            "https://crm.example.com/hooks/drip",
            frozenset({"subscriber.confirmed", "purchase.completed"}),
            SECRET,
        ),
        Endpoint(
            "https://stats.example.com/in",
            frozenset({"subscriber.confirmed", "purchase.completed"}),
            SECRET,
        ),
    )
    assert endpoints[0].key == bytes(range(32))
    assert SECRET not in repr(endpoints)


def test_unset_means_no_endpoints() -> None:
    assert load_settings().outgoing_webhooks == ()


BAD_ENTRIES = [
    ("not json", "not JSON"),
    (json.dumps({"url": "https://x.example.com"}), "must be a list of endpoints"),
    (json.dumps([entry(events=["subscriber.signedup"])]), "events: unknown event type"),
    (json.dumps([entry(events=[])]), "events: required"),
    (json.dumps([entry(url="ftp://x.example.com/h")]), "url: must be an absolute http(s) URL"),
    (json.dumps([entry(url="https://x.example.com:99999/h")]), "url: the port must be"),
    (json.dumps([entry(secret="hunter2-hunter2")]), 'secret: must be "whsec_"'),
    (json.dumps([entry(secret=SHORT)]), "24 to 64 random bytes"),
    (json.dumps([entry(secret_env="X")]), "either secret or secret_env"),
    (json.dumps([entry(secret=None, secret_env="DRIP_TEST_UNSET")]), "DRIP_TEST_UNSET is not set"),
    (json.dumps([entry(), entry()]), "url: listed twice"),
    (json.dumps([entry(evnets=["x"])]), "unknown key 'evnets'"),
]


@pytest.mark.parametrize(("value", "expected"), BAD_ENTRIES, ids=[e for _, e in BAD_ENTRIES])
def test_a_bad_entry_is_named_with_its_key(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    message = problem(monkeypatch, value)

    assert "DRIP_OUTGOING_WEBHOOKS" in message
    assert expected in message
    if value.startswith("[") and "twice" not in expected:
        assert "entry 1 (" in message


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("DRIP_OUTGOING_WEBHOOK_BATCH", "51", "less than or equal to 50"),
        ("DRIP_OUTGOING_WEBHOOK_TIMEOUT", "0", "greater than 0"),
        ("DRIP_OUTGOING_WEBHOOK_SECONDS", "often", "valid number"),
    ],
)
def test_the_other_settings_are_bounded(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, expected: str
) -> None:
    monkeypatch.setenv(variable, raw)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert f"{variable}: " in str(caught.value) and expected in str(caught.value)


def test_the_defaults() -> None:
    settings = load_settings()

    assert (
        settings.outgoing_webhook_timeout,
        settings.outgoing_webhook_batch,
        settings.outgoing_webhook_seconds,
    ) == (5.0, 20, 5.0)


def test_the_entry_is_named_by_number_and_url(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = entry(url="https://two.example.com/h", events=["nope"])

    message = problem(monkeypatch, json.dumps([entry(), bad]))

    assert "entry 2 (https://two.example.com/h): events: unknown event type 'nope'" in message


def test_a_rejected_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "whsec_not-base64-but-secret-all-the-same"

    message = problem(monkeypatch, json.dumps([entry(secret=secret)]))

    assert "secret" in message and secret not in message and "not-base64" not in message


def test_drip_exits_2_naming_the_bad_entry(tmp_path: Path) -> None:
    bad = json.dumps([entry(events=["nope"])])
    env = {"DRIP_OUTGOING_WEBHOOKS": bad, "DRIP_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}

    result = CliRunner().invoke(main, ["webhooks", "log"], env=env)

    assert result.exit_code == 2
    assert "DRIP_OUTGOING_WEBHOOKS" in result.output and "entry 1" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- webhooks.toml


def content_folder(tmp_path: Path, toml: str | None) -> Path:
    """A content folder with the repository's lessons and, if given, a webhooks.toml."""
    content = tmp_path / "content"
    content.mkdir()
    (content / "lessons").symlink_to(REPO / "content" / "lessons", target_is_directory=True)
    if toml is not None:
        (content / "webhooks.toml").write_text(toml, encoding="utf-8")
    return content / "lessons"


GOOD_TOML = """
[[endpoints]]
url = "https://crm.example.com/hooks/drip"
events = ["subscriber.subscribed", "subscriber.unsubscribed"]
secret_env = "CRM_WEBHOOK_SECRET"
"""


def test_the_file_beside_the_lessons_adds_endpoints_with_secrets_from_the_environment(
    tmp_path: Path,
) -> None:
    lessons = content_folder(tmp_path, GOOD_TOML)
    other = {
        "url": "https://stats.example.com/in",
        "events": ["email.bounced"],
        "secret": SECRET,
    }
    settings = make_settings(tmp_path, content_dir=lessons, outgoing_webhooks=json.dumps([other]))

    endpoints = load_endpoints(settings, {"CRM_WEBHOOK_SECRET": SECRET})

    assert endpoints_file(settings) == tmp_path / "content" / "webhooks.toml"
    assert [(e.url, sorted(e.events), e.secret) for e in endpoints] == [
        ("https://stats.example.com/in", ["email.bounced"], SECRET),
        (
            "https://crm.example.com/hooks/drip",
            ["subscriber.subscribed", "subscriber.unsubscribed"],
            SECRET,
        ),
    ]


def test_no_file_no_endpoints(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, content_dir=content_folder(tmp_path, None))

    assert load_endpoints(settings, {}) == ()


BAD_FILES = [
    (GOOD_TOML, "secret_env: the environment variable CRM_WEBHOOK_SECRET is not set"),
    (
        GOOD_TOML.replace('secret_env = "CRM_WEBHOOK_SECRET"', f'secret = "{SECRET}"'),
        "entry 1 (https://crm.example.com/hooks/drip): secret: not in a file",
    ),
    ("[[endpoints]\nurl =", "not TOML"),
    (GOOD_TOML.replace("[[endpoints]]", "[[endpoint]]"), "unknown key 'endpoint'"),
]


@pytest.mark.parametrize(("toml", "expected"), BAD_FILES, ids=[e for _, e in BAD_FILES])
def test_a_bad_file_is_named_with_the_entry_and_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    settings = make_settings(tmp_path, content_dir=content_folder(tmp_path, toml))

    with pytest.raises(SettingsError) as caught:
        load_endpoints(settings, {})

    assert str(caught.value).startswith(f"{tmp_path / 'content' / 'webhooks.toml'}: ")
    assert expected in str(caught.value)
    assert SECRET not in str(caught.value)


def test_an_endpoint_in_both_places_is_refused(tmp_path: Path) -> None:
    lessons = content_folder(tmp_path, GOOD_TOML)
    same = entry(url="https://crm.example.com/hooks/drip")
    settings = make_settings(tmp_path, content_dir=lessons, outgoing_webhooks=json.dumps([same]))

    with pytest.raises(SettingsError, match="also in DRIP_OUTGOING_WEBHOOKS"):
        load_endpoints(settings, {"CRM_WEBHOOK_SECRET": SECRET})


def test_drip_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    lessons = content_folder(tmp_path, GOOD_TOML)
    env = {
        "DRIP_CONTENT_DIR": str(lessons),
        "DRIP_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }

    result = CliRunner().invoke(main, ["webhooks", "log"], env=env)

    assert result.exit_code == 2
    assert "webhooks.toml" in result.output and "CRM_WEBHOOK_SECRET is not set" in result.output
    assert "Traceback" not in result.output
