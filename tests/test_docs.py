"""The README stays true to the code: every setting and every command is documented."""

from __future__ import annotations

import re
from pathlib import Path

import click

from drip.cli.main import main
from drip.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_in_the_readme() -> None:
    documented = set(re.findall(r"`(DRIP_[A-Z0-9_]+)`", README))
    fields = {f"DRIP_{name.upper()}" for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from README.md"
    assert documented - fields == set(), "README.md documents settings that don't exist"


def _commands(group: click.Group, prefix: str = "drip") -> set[str]:
    found: set[str] = set()
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found |= _commands(command, path)
        else:
            found.add(path)
    return found


def test_every_command_is_in_the_readme_table() -> None:
    missing = {c for c in _commands(main) if f"`{c}" not in README}
    assert missing == set()
