""".env.example is what ``drip settings example`` prints: every setting, one comment line each.

A setting added to drip.settings.Settings without regenerating the file fails here, with the
command that regenerates it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from click.testing import CliRunner

from drip.cli.env_example import (
    COMPOSE_SETS,
    REGENERATE,
    REQUIRED,
    env_example,
    undocumented,
)
from drip.cli.main import main
from drip.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"
# `VAR=value` (set) or `# VAR=value` (shown with its default, commented out).
ENTRY = re.compile(r"^(?P<commented># )?(?P<name>(?:DRIP|POSTGRES)_[A-Z0-9_]+)=(?P<value>.*)$")
FIELDS = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}


def entries(text: str) -> dict[str, tuple[bool, str, str]]:
    """Variable -> (commented out, value, the comment line above it)."""
    lines = text.splitlines()
    found: dict[str, tuple[bool, str, str]] = {}
    for i, line in enumerate(lines):
        match = ENTRY.match(line)
        if match:
            assert match["name"] not in found, f"{match['name']} is listed twice"
            found[match["name"]] = (bool(match["commented"]), match["value"], lines[i - 1])
    return found


def test_the_checked_in_file_is_what_the_generator_prints() -> None:
    expected = env_example()
    actual = EXAMPLE.read_text(encoding="utf-8")
    if actual != expected:
        missing = sorted(set(entries(expected)) - set(entries(actual)))
        stale = sorted(set(entries(actual)) - set(entries(expected)))
        diff = "".join(
            list(
                difflib.unified_diff(
                    actual.splitlines(keepends=True),
                    expected.splitlines(keepends=True),
                    ".env.example",
                    "generated",
                )
            )[:40]
        )
        raise AssertionError(
            f".env.example is out of date (missing: {missing or 'none'}, no longer settings: "
            f"{stale or 'none'}); regenerate it with `{REGENERATE}`\n{diff}"
        )


def test_the_command_prints_the_generated_file() -> None:
    result = CliRunner().invoke(main, ["settings", "example"])

    assert result.exit_code == 0, result.output
    assert result.output == env_example()


def test_every_setting_has_exactly_one_entry() -> None:
    listed = entries(env_example())

    assert set(listed) == FIELDS | {"POSTGRES_PASSWORD"}


def test_every_setting_has_a_one_line_comment() -> None:
    assert undocumented(env_example()) == [], "write a comment above these in drip/settings.py"
    for name, (_, _, comment) in entries(env_example()).items():
        assert comment.startswith("# ") and len(comment) > 12, f"{name}: no comment above it"
        assert not ENTRY.match(comment), f"{name}: the line above is another variable"


def test_required_values_are_the_only_lines_set_and_they_are_empty() -> None:
    listed = entries(env_example())

    for name, (commented, value, comment) in listed.items():
        required = name in REQUIRED
        assert commented is not required, f"{name}: only required values are uncommented"
        assert ("[required]" in comment) is required, name
        if required:
            # Empty, so `docker compose up` stops until it is filled in (a placeholder would pass).
            assert value == "", f"{name}: a required value must start out empty"


def test_secrets_are_marked_and_never_show_a_value() -> None:
    listed = entries(env_example())
    secrets = {
        f"{ENV_PREFIX}{name.upper()}"
        for name, info in Settings.model_fields.items()
        if "SecretStr" in repr(info.annotation)
    }

    assert secrets >= {"DRIP_SECRET_KEY", "DRIP_SENDGRID_API_KEY", "DRIP_PURCHASE_WEBHOOK_SECRET"}
    for name in [*secrets, "POSTGRES_PASSWORD"]:
        _, value, comment = listed[name]
        assert "[secret]" in comment, f"{name} is not marked [secret]"
        assert value == "", f"{name} shows a value"
    for name in set(listed) - secrets - {"POSTGRES_PASSWORD"}:
        assert "[secret]" not in listed[name][2], f"{name} is marked [secret]"


def test_defaults_are_the_settings_defaults_unless_compose_or_the_image_sets_them() -> None:
    listed = entries(env_example())

    assert listed["DRIP_TICK_SECONDS"][1] == "60"
    assert listed["DRIP_TRACK_OPENS"][1] == "true"
    assert listed["DRIP_FORWARDED_ALLOW_IPS"][1] == COMPOSE_SETS["DRIP_FORWARDED_ALLOW_IPS"]
    assert listed["DRIP_EMAIL_BACKEND"][1] == "sendgrid"
    # No path of the machine that generated the file.
    assert str(ROOT) not in env_example()


def test_a_new_documented_setting_gets_an_entry() -> None:
    class WithMore(Settings):
        # How many widgets to frobnicate per tick.
        widget_count: int = 3

    text = env_example(WithMore)

    assert entries(text)["DRIP_WIDGET_COUNT"] == (
        True,
        "3",
        "# How many widgets to frobnicate per tick.",
    )
    assert text != EXAMPLE.read_text(encoding="utf-8")  # so the check above fails until regenerated


def test_a_new_setting_without_a_comment_is_reported() -> None:
    class WithMore(Settings):
        widget_count: int = 3

    assert undocumented(env_example(WithMore)) == ["DRIP_WIDGET_COUNT"]


def test_a_description_wins_over_the_comment() -> None:
    from pydantic import Field

    class WithMore(Settings):
        # Not this.
        widget_count: int = Field(default=3, description="Widgets per tick")

    assert entries(env_example(WithMore))["DRIP_WIDGET_COUNT"][2] == "# Widgets per tick."
