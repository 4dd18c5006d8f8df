"""Signup forms: ``<forms_dir>/<slug>.toml``, one file per form on the coach's site.

```toml
name = "Race-day checklist"              # shown on the dashboard
tags = ["race-day"]                      # applied at signup
sequence = "race-day-checklist"          # started on confirmation (a [[triggers]] on = "form")
redirect = "https://coach.example/thanks" # after the post; absent: DRIP_THANK_YOU_URL or /thanks
confirm_subject = "Confirm and get the checklist"
confirm_preheader = "One click and the race-day checklist is on its way."
confirm_intro = '''
Hi {{ first_name }},

One click to confirm your address, and the checklist is on its way.
'''
confirm_button = "Yes, send me the checklist"
```

The file name is the slug a signup names (``form=race-day``). The form ``default`` always exists:
from ``default.toml`` if there is one, else :data:`BUILTIN_DEFAULT`, which is today's behaviour
(no tags, the ``DRIP_COURSE_SEQUENCE`` course unless a sequence names the form, today's
confirmation email).

Contract: :func:`check_forms` never raises for bad content; it returns every problem as
``path:line: message`` like the lesson checks, and builds a :class:`Form` only from a file with no
problems. :func:`load_forms` returns them all or raises :class:`ContentError`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, TemplateSyntaxError, nodes

from drip.content.checks import check_body
from drip.content.layout import is_sequence_folder, read_text
from drip.content.sequence_toml import parse_toml, toml_key_line
from drip.content.triggers import TAG_RE
from drip.content.types import (
    DEFAULT_FORM,
    DEFAULT_RUNNERS_LAB_URL,
    PREHEADER_MAX,
    PREHEADER_MIN,
    SUBJECT_MAX,
)
from drip.errors import ContentError, Problem

__all__ = [
    "BUILTIN_DEFAULT",
    "CONFIRM_BUTTON",
    "CONFIRM_PREHEADER",
    "CONFIRM_SUBJECT",
    "FORM_KEYS",
    "ConfirmWording",
    "Form",
    "FormsCheck",
    "check_forms",
    "load_forms",
    "sequence_slugs",
]

# Today's confirmation email (drip.content.render.Renderer.confirmation, templates/email/confirm.*).
CONFIRM_SUBJECT = "Please confirm your subscription"
CONFIRM_PREHEADER = "One click and your first lesson of the crash course is on its way."
CONFIRM_BUTTON = "Yes, send me the course"

FORM_KEYS = (
    "name",
    "tags",
    "sequence",
    "redirect",
    "confirm_subject",
    "confirm_preheader",
    "confirm_intro",
    "confirm_button",
)
# A slug is stored in subscribers.form (64 characters) and posted by the site's HTML.
SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
SLUG_MAX = 64
NAME_MAX = 100
TAGS_MAX = 20
BUTTON_MAX = 40
URL_MAX = 2000
# The confirmation email is rendered with the shared names only: it is no lesson.
_LESSON_ONLY = frozenset({"lesson_number", "lesson_count"})
_JINJA = Environment()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ConfirmWording:
    """What a form's confirmation email says. ``intro`` is its Markdown body (the lesson rules,
    ``{{ first_name }}`` and the other shared names); ``None``: templates/email/confirm.md."""

    subject: str = CONFIRM_SUBJECT
    preheader: str = CONFIRM_PREHEADER
    intro: str | None = None
    button: str = CONFIRM_BUTTON

    @property
    def is_builtin(self) -> bool:
        """True when it says exactly what the confirmation email said before forms."""
        return self == ConfirmWording()


@dataclass(frozen=True)
class Form:
    """One checked signup form. ``sequence`` names a sequence of the library (or ``None``);
    ``redirect`` is an https URL (or ``None``); ``path`` is ``None`` for the built-in default."""

    slug: str
    name: str
    tags: tuple[str, ...] = ()
    sequence: str | None = None
    redirect: str | None = None
    confirm: ConfirmWording = field(default_factory=ConfirmWording)
    path: Path | None = None


BUILTIN_DEFAULT = Form(slug=DEFAULT_FORM, name="Signup form")
"""The default form when there is no ``default.toml``: exactly what a signup did before forms."""


@dataclass(frozen=True)
class FormsCheck:
    """The outcome of checking a forms folder. ``forms``: the valid forms by slug (always with
    a ``default``); ``slugs``: every form that exists, broken or not, so that library checks
    don't report a trigger naming a broken form as dangling too; ``problems``: all of them."""

    forms: dict[str, Form]
    slugs: frozenset[str]
    problems: list[Problem]


def sequence_slugs(content_dir: Path) -> frozenset[str]:
    """The slugs of the sequence folders under ``content_dir`` (valid or not), which a form's
    ``sequence`` may name; empty when the folder does not exist."""
    if not content_dir.is_dir():
        return frozenset()
    return frozenset(p.name for p in content_dir.iterdir() if is_sequence_folder(p))


def check_forms(
    forms_dir: Path,
    *,
    sequences: Collection[str],
    runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL,
    required: bool = False,
) -> FormsCheck:
    """Check every ``*.toml`` file of ``forms_dir``. ``sequences`` are the slugs a form's
    ``sequence`` may name. A missing folder means the built-in default form only, unless
    ``required`` (the folder was named explicitly): then it is a problem."""
    forms_dir = Path(forms_dir)
    forms: dict[str, Form] = {}
    slugs = {DEFAULT_FORM}
    problems: list[Problem] = []
    if not forms_dir.is_dir():
        if required:
            problems.append(Problem(str(forms_dir), 1, "forms directory does not exist"))
        return FormsCheck({DEFAULT_FORM: BUILTIN_DEFAULT}, frozenset(slugs), problems)
    for path in sorted(p for p in forms_dir.iterdir() if _is_form_candidate(p)):
        if path.suffix != ".toml":
            problems.append(Problem(str(path), 1, "not a form: a form is a <slug>.toml file"))
            continue
        slug_ok = _check_slug(path, problems)
        if slug_ok:
            slugs.add(path.stem)
        form = _check_file(path, sequences, runners_lab_url, problems)
        if form is not None and slug_ok:
            forms[form.slug] = form
    forms.setdefault(DEFAULT_FORM, BUILTIN_DEFAULT)
    ordered = sorted(problems, key=lambda p: (p.path, p.line))
    return FormsCheck(forms, frozenset(slugs), ordered)


def load_forms(
    forms_dir: Path,
    *,
    sequences: Collection[str],
    runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL,
    required: bool = False,
) -> dict[str, Form]:
    """Like :func:`check_forms`, but raise :class:`ContentError` on any problem."""
    found = check_forms(
        forms_dir, sequences=sequences, runners_lab_url=runners_lab_url, required=required
    )
    if found.problems:
        raise ContentError(found.problems)
    return found.forms


def _is_form_candidate(path: Path) -> bool:
    """Visible files other than a README: editors' backups and notes are not forms."""
    name = path.name
    return (
        path.is_file()
        and not name.startswith((".", "#", "~"))
        and not name.endswith("~")
        and (path.stem.lower() != "readme")
    )


def _check_slug(path: Path, problems: list[Problem]) -> bool:
    slug = path.stem
    if not SLUG_RE.fullmatch(slug):
        message = f"form file name {slug!r} is not a slug: lowercase words joined by '-'"
        problems.append(Problem(str(path), 1, message))
        return False
    if len(slug) > SLUG_MAX:
        problems.append(Problem(str(path), 1, f"form slug is longer than {SLUG_MAX} characters"))
        return False
    return True


@dataclass
class _File:
    """One form file being checked: problems land on the line of the key they are about."""

    path: Path
    text: str
    data: Mapping[str, Any]
    problems: list[Problem]

    def line(self, key: str) -> int:
        return toml_key_line(self.text, key)

    def at(self, key: str, message: str, offset: int = 0) -> None:
        self.problems.append(Problem(str(self.path), self.line(key) + offset, message))


def _check_file(
    path: Path, sequences: Collection[str], runners_lab_url: str, problems: list[Problem]
) -> Form | None:
    text = read_text(path, problems)
    if text is None:
        return None
    data = parse_toml(str(path), text, problems)
    if data is None:
        return None
    file = _File(path, text, data, [])
    for key in data:
        if key not in FORM_KEYS:
            file.at(key, f"unknown key {key!r} (known: {', '.join(FORM_KEYS)})")
    name = _name(file)
    tags = _tags(file)
    sequence = _sequence(file, sequences)
    redirect = _redirect(file)
    wording = _wording(file, runners_lab_url)
    problems.extend(file.problems)
    if file.problems or name is None:
        return None
    return Form(path.stem, name, tags, sequence, redirect, wording, path)


def _string(file: _File, key: str, limit: int) -> str | None:
    """A present, non-empty, single-line string of at most ``limit`` characters, or None."""
    value = file.data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        file.at(key, f"{key} must be a non-empty string, not {value!r}")
        return None
    if _CONTROL.search(value):
        file.at(key, f"{key} must be one line without control characters")
        return None
    if len(value) > limit:
        file.at(key, f"{key} is {len(value)} characters; at most {limit}")
        return None
    return value.strip()


def _name(file: _File) -> str | None:
    if "name" not in file.data:
        file.problems.append(Problem(str(file.path), 1, "name is required"))
        return None
    return _string(file, "name", NAME_MAX)


def _tags(file: _File) -> tuple[str, ...]:
    value = file.data.get("tags", [])
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        file.at("tags", f'tags must be a list like ["race-day"], not {value!r}')
        return ()
    for tag in value:
        if not TAG_RE.fullmatch(tag):
            file.at("tags", f"tags: {tag!r} is not a tag (lowercase, digits, - _ :, at most 64)")
            return ()
    if len(value) > TAGS_MAX:
        file.at("tags", f"tags holds {len(value)} tags; at most {TAGS_MAX}")
        return ()
    return tuple(dict.fromkeys(value))


def _sequence(file: _File, sequences: Collection[str]) -> str | None:
    if "sequence" not in file.data:
        return None
    value = file.data["sequence"]
    if not isinstance(value, str) or not SLUG_RE.fullmatch(value):
        file.at("sequence", f"sequence must be a sequence slug, not {value!r}")
        return None
    if value not in sequences:
        known = ", ".join(sorted(sequences)) or "none"
        file.at("sequence", f"sequence {value!r} names no sequence (known: {known})")
        return None
    return value


def _redirect(file: _File) -> str | None:
    value = _string(file, "redirect", URL_MAX)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or " " in value:
        file.at("redirect", f"redirect must be an https:// URL, not {value!r}")
        return None
    return value


def _wording(file: _File, runners_lab_url: str) -> ConfirmWording:
    """The confirmation email's wording; today's for every key the file leaves out."""
    builtin = ConfirmWording()
    subject = _string(file, "confirm_subject", SUBJECT_MAX)
    if subject is not None:
        _template(file, "confirm_subject", subject, runners_lab_url, markdown=False)
    preheader = _string(file, "confirm_preheader", PREHEADER_MAX)
    if preheader is not None and len(preheader) < PREHEADER_MIN:
        message = f"confirm_preheader is {len(preheader)} characters; at least {PREHEADER_MIN}"
        file.at("confirm_preheader", message)
    intro = _intro(file, runners_lab_url)
    button = _string(file, "confirm_button", BUTTON_MAX)
    return ConfirmWording(
        subject=subject or builtin.subject,
        preheader=preheader or builtin.preheader,
        intro=intro,
        button=button or builtin.button,
    )


def _intro(file: _File, runners_lab_url: str) -> str | None:
    value = file.data.get("confirm_intro")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        file.at("confirm_intro", f"confirm_intro must be non-empty Markdown, not {value!r}")
        return None
    _template(file, "confirm_intro", value, runners_lab_url, markdown=True)
    return value


def _template(file: _File, key: str, source: str, runners_lab_url: str, *, markdown: bool) -> None:
    """The lesson rules for ``source`` (drip.content.checks.check_body), less the lesson-only
    names; problems placed on the file's lines (a multi-line string starts on the next one)."""
    first = _value_first_line(file.text, file.line(key))
    for problem in check_body(source, runners_lab_url=runners_lab_url, markdown=markdown):
        file.at(key, f"{key}: {problem.message}", first + problem.line - 1)
    try:
        parsed = _JINJA.parse(source)
    except TemplateSyntaxError:
        return  # check_body reported it
    seen: set[str] = set()
    for node in parsed.find_all(nodes.Name):
        if node.name in _LESSON_ONLY and node.name not in seen:
            seen.add(node.name)
            message = f"{key}: {{{{ {node.name} }}}} is for lessons; a confirmation email has none"
            file.at(key, message, first + node.lineno - 1)


def _value_first_line(text: str, key_line: int) -> int:
    """How many lines after ``key = `` its string's first line is: 1 for a multi-line string
    opened at the end of the line (TOML drops that newline), else 0."""
    lines = text.split("\n")
    line = lines[key_line - 1] if 0 < key_line <= len(lines) else ""
    value = line.split("=", 1)[1].strip() if "=" in line else ""
    return 1 if value in ('"""', "'''") else 0
