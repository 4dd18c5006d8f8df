"""Check a sequence folder's ``sequence.toml``: its keys, send window, successor, category,
priority, re-entry, and what starts and ends it (triggers and exits, drip.content.triggers).

Contract: :func:`check_sequence_file` never raises for bad content. It appends every problem it
finds to the caller's list and returns what the file said as a :class:`SequenceMeta`, kept even
when the file is broken so that library-wide checks (``on_complete`` targets) can still run.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drip.content.layout import SEQUENCE_FILE, read_text
from drip.content.triggers import Rule, check_rules
from drip.content.values import int_range, is_int
from drip.errors import Problem
from drip.schedule import SendWindow, parse_send_days

__all__ = ["SequenceMeta", "check_sequence_file", "parse_toml", "toml_key_line"]

_SEQUENCE_KEYS = (
    "slug",
    "name",
    "kind",
    "send_hour",
    "send_minute",
    "send_days",
    "first_lesson",
    "on_complete",
    "category",
    "priority",
    "reentry",
    "triggers",
    "exits",
)
_FIRST_LESSON = {"immediately": True, "next_send_hour": False}
# Slugs end up in lesson keys ("slug/3") and URLs; categories in analytics labels.
_SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_CATEGORY_RE = re.compile(r"[a-z0-9-]+")
_CATEGORY_MAX = 40
_TOML_AT_LINE_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END_RE = re.compile(r"\s*\(at end of document\)$")
_EVERY_DAY = frozenset(range(7))


@dataclass
class SequenceMeta:
    """What sequence.toml said, kept even when broken so library checks can still run.

    ``window`` is ``None`` unless send_hour, send_minute and send_days are all valid.
    """

    name: str = ""
    kind: str = ""
    window: SendWindow | None = None
    first_lesson_immediately: bool = True
    on_complete: str | None = None
    on_complete_line: int = 1
    category: str = ""
    priority: int = 0
    reentry: bool = False
    triggers: tuple[Rule, ...] = ()
    exits: tuple[Rule, ...] = ()


def toml_key_line(text: str, key: str) -> int:
    """Line of top-level ``key = ...`` in TOML ``text``; 1 if not found (tomllib has no marks)."""
    name = re.escape(key)
    assignment = re.compile(rf"""\s*(?:{name}|"{name}"|'{name}')\s*[=.]""")
    table = re.compile(rf"""\s*\[+\s*(?:{name}|"{name}"|'{name}')\s*[].]""")
    in_top_level = True
    for number, line in enumerate(text.split("\n"), start=1):
        if table.match(line):
            return number
        if line.lstrip().startswith("["):
            in_top_level = False  # later assignments belong to a table, not the top level
        elif in_top_level and assignment.match(line):
            return number
    return 1


@dataclass
class _Report:
    """Adds problems about one sequence.toml, placed on the line of the key they are about."""

    where: str
    text: str
    problems: list[Problem]

    def at_key(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.where, toml_key_line(self.text, key), message))

    def at_top(self, message: str) -> None:
        # A missing key has no line of its own.
        self.problems.append(Problem(self.where, 1, message))


def check_sequence_file(directory: Path, folder: str, problems: list[Problem]) -> SequenceMeta:
    """Check ``directory/sequence.toml`` for the folder named ``folder``; append its problems."""
    path = directory / SEQUENCE_FILE
    info = SequenceMeta()
    if not path.is_file():
        problems.append(Problem(str(path), 1, f"{SEQUENCE_FILE} is missing"))
        return info
    text = read_text(path, problems)
    if text is None:
        return info
    data = parse_toml(str(path), text, problems)
    if data is None:
        return info
    report = _Report(str(path), text, problems)
    for key in data:
        if key not in _SEQUENCE_KEYS:
            # A typo like ``send_minutes`` would otherwise silently fall back to the default.
            report.at_key(key, f"unknown key {key!r} (known: {', '.join(_SEQUENCE_KEYS)})")
    _check_identity(data, folder, report, info)
    info.window = _check_window(data, report)
    _check_first_lesson(data, report, info)
    _check_on_complete(data, report, info)
    _check_category(data, report, info)
    _check_automation(data, report, info)
    return info


def parse_toml(where: str, text: str, problems: list[Problem]) -> dict[str, Any] | None:
    """The TOML document, or ``None`` after adding one problem placed where tomllib failed."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        problems.append(Problem(where, 1, "not valid TOML: nested too deeply"))
        return None
    except tomllib.TOMLDecodeError as err:
        message, line = str(err), 1
        if match := _TOML_AT_LINE_RE.search(message):
            line = int(match.group(1))
            message = message[: match.start()]
        elif match := _TOML_AT_END_RE.search(message):
            line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
            message = message[: match.start()] + " at end of file"
        problems.append(Problem(where, line, f"not valid TOML: {message}"))
        return None


def _check_identity(
    data: Mapping[str, Any], folder: str, report: _Report, info: SequenceMeta
) -> None:
    """slug, name and kind: required non-empty strings; the slug equals the folder name."""
    for key in ("slug", "name", "kind"):
        value = data.get(key)
        if value is None:
            report.at_top(f"{key} is required")
        elif not isinstance(value, str) or not value.strip():
            report.at_key(key, f"{key} must be a non-empty string, not {value!r}")
    slug = data.get("slug")
    if isinstance(slug, str) and slug.strip():
        if slug != folder:
            report.at_key("slug", f"slug {slug!r} must equal the folder name {folder!r}")
        elif not _SLUG_RE.fullmatch(slug):
            report.at_key("slug", f"slug {slug!r} must be lowercase words joined by '-'")
    if isinstance(data.get("name"), str):
        info.name = data["name"]
    if isinstance(data.get("kind"), str):
        info.kind = data["kind"]


def _check_window(data: Mapping[str, Any], report: _Report) -> SendWindow | None:
    """The send window, or ``None`` if any of send_hour, send_minute, send_days is bad."""
    hour = data.get("send_hour")
    minute = data.get("send_minute", 0)
    window_ok = True
    if hour is None:
        report.at_top("send_hour is required (local hour 0..23)")
        window_ok = False
    elif error := int_range(hour, "send_hour", 0, 23):
        report.at_key("send_hour", error)
        window_ok = False
    if error := int_range(minute, "send_minute", 0, 59):
        report.at_key("send_minute", error)
        window_ok = False
    days = _check_send_days(data, report)
    if window_ok and days is not None and is_int(hour) and is_int(minute):
        return SendWindow(hour=hour, minute=minute, days=days)
    return None


def _check_send_days(data: Mapping[str, Any], report: _Report) -> frozenset[int] | None:
    """The weekdays to send on (every day when the key is absent), or ``None`` if bad."""
    if "send_days" not in data:
        return _EVERY_DAY
    names = data["send_days"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        report.at_key("send_days", f'send_days must be a list like ["mon", "wed"], not {names!r}')
        return None
    try:
        return parse_send_days(names)
    except ValueError as err:
        report.at_key("send_days", f"bad send_days: {err}")
        return None


def _check_first_lesson(data: Mapping[str, Any], report: _Report, info: SequenceMeta) -> None:
    first = data.get("first_lesson", "immediately")
    if isinstance(first, str) and first in _FIRST_LESSON:
        info.first_lesson_immediately = _FIRST_LESSON[first]
    else:
        choices = " or ".join(repr(c) for c in _FIRST_LESSON)
        report.at_key("first_lesson", f"first_lesson must be {choices}, not {first!r}")


def _check_on_complete(data: Mapping[str, Any], report: _Report, info: SequenceMeta) -> None:
    """The successor's slug; whether that sequence exists is a library-wide check."""
    if "on_complete" not in data:
        return
    target = data["on_complete"]
    info.on_complete_line = toml_key_line(report.text, "on_complete")
    if not isinstance(target, str) or not _SLUG_RE.fullmatch(target):
        report.at_key("on_complete", f"on_complete must be a sequence slug, not {target!r}")
    else:
        info.on_complete = target


def _check_category(data: Mapping[str, Any], report: _Report, info: SequenceMeta) -> None:
    if "category" in data:
        category = data["category"]
        if not isinstance(category, str) or not _CATEGORY_RE.fullmatch(category):
            report.at_key("category", f"category must match [a-z0-9-]+, not {category!r}")
        elif len(category) > _CATEGORY_MAX:
            report.at_key(
                "category", f"category is {len(category)} characters; at most {_CATEGORY_MAX}"
            )
        else:
            info.category = category
    elif info.kind:
        # The category defaults to the kind, and it ends up as a tracking label, so it must
        # satisfy the category rules too.
        if _CATEGORY_RE.fullmatch(info.kind) and len(info.kind) <= _CATEGORY_MAX:
            info.category = info.kind
        else:
            report.at_key(
                "kind", f"kind {info.kind!r} is not a valid category; set category explicitly"
            )


def _check_automation(data: Mapping[str, Any], report: _Report, info: SequenceMeta) -> None:
    """priority, reentry, and the triggers and exits (drip.content.triggers)."""
    priority = data.get("priority", 0)
    if error := int_range(priority, "priority", -100, 100):
        report.at_key("priority", error)
    else:
        info.priority = priority
    reentry = data.get("reentry", False)
    if isinstance(reentry, bool):
        info.reentry = reentry
    else:
        report.at_key("reentry", f"reentry must be true or false, not {reentry!r}")
    info.triggers, info.exits = check_rules(data, report.text, report.where, report.problems)
