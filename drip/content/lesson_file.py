"""Check one lesson file: its name, front matter fields, subject and body.

Contract: :func:`check_lesson` never raises. It returns a :class:`LessonDraft` holding whatever
could be read and every problem found in one run: every front matter field, the subject's
template, the body's template and the body's Markdown rules are each checked whatever the others
hold. Only a file that can't be read or cut into front matter and body stops early (there is no
body to check), and YAML that can't be parsed skips the field checks (their problems would be
noise). A draft with no problems has every field a :class:`~drip.content.types.Lesson` needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from drip.content.body_rules import Found, check_source, check_template
from drip.content.front_matter import load_front_matter, split_front_matter
from drip.content.layout import LESSON_FILE_RE, read_text
from drip.content.types import PREHEADER_MAX, PREHEADER_MIN, SUBJECT_MAX
from drip.content.values import int_range, is_int
from drip.errors import Problem

__all__ = ["LessonDraft", "check_lesson"]

_FRONT_MATTER_KEYS = ("position", "subject", "preheader", "send_hour", "send_minute")
# A required key that is missing has no line of its own: point at the first front matter line.
_MISSING_LINE = 2


@dataclass
class LessonDraft:
    """One lesson file as far as it could be read; ``problems`` empty means it is valid."""

    path: Path
    position: int | None = None
    position_line: int = 1
    subject: str = ""
    subject_line: int = 1
    preheader: str = ""
    body: str = ""
    body_line: int = 1
    send_hour: int | None = None
    send_minute: int | None = None
    problems: list[Problem] = field(default_factory=list)

    def add(self, line: int, message: str) -> None:
        """Record a problem at a 1-based line of the lesson file."""
        self.problems.append(Problem(str(self.path), line, message))

    def add_found(self, found: Found, first_line: int) -> None:
        """Record problems whose lines count from 1 at ``first_line`` of the file."""
        for line, message in found:
            self.add(first_line + line - 1, message)


def check_lesson(path: Path, runners_lab_url: str) -> LessonDraft:
    """Check the lesson file at ``path``; links built from ``runners_lab_url`` are checked too."""
    draft = LessonDraft(path=path)
    try:
        _check_lesson_into(draft, runners_lab_url)
    except Exception as err:
        # Last resort: known failure modes are reported precisely where they happen, but a
        # content check must end in a problem report, never in a traceback for an author.
        draft.add(1, f"could not check this lesson: {type(err).__name__}: {err}")
    return draft


def _check_lesson_into(draft: LessonDraft, runners_lab_url: str) -> None:
    name = LESSON_FILE_RE.fullmatch(draft.path.stem)
    if not name:
        draft.add(1, "file name must look like NN-some-slug.md (position, then lowercase words)")
    text = read_text(draft.path, draft.problems)
    if text is None:
        return
    split = split_front_matter(text, draft.add)
    if split is None:
        return
    draft.body, draft.body_line = split.body, split.body_line
    front_matter = load_front_matter(split.front_matter, draft.add)
    if front_matter is not None:
        _check_fields(draft, *front_matter)
    if name and draft.position is not None and int(name.group(1)) != draft.position:
        draft.add(
            draft.position_line,
            f"file name starts with {name.group(1)} but position is {draft.position}",
        )
    _check_subject_template(draft, runners_lab_url)
    if not draft.body.strip():
        # Point at the first body line if the file has one, else at the closing fence.
        has_body_line = draft.body_line <= text.rstrip("\n").count("\n") + 1
        draft.add(draft.body_line if has_body_line else split.closing_line, "body is empty")
        return
    # Template problems and Markdown problems together: where the template can't be rendered,
    # check_source reads the Markdown rules off the source with stand-ins for its expressions.
    draft.add_found(check_source(draft.body, runners_lab_url), draft.body_line)


def _check_subject_template(draft: LessonDraft, runners_lab_url: str) -> None:
    """The renderer treats the subject as a template too (``{{ first_name }}, ...``), so it must
    pass the same checks as the body; a failure here would otherwise surface at send time."""
    if not draft.subject:
        return
    _, found = check_template(draft.subject, runners_lab_url)
    for _line, message in found:
        # All of a subject's problems sit on its one line.
        draft.add(draft.subject_line, f"subject: {message}")


def _check_fields(draft: LessonDraft, data: Mapping[object, object], lines: dict[str, int]) -> None:
    """Every front matter field, copied onto ``draft`` when valid."""
    for key in data:
        if not isinstance(key, str) or key not in _FRONT_MATTER_KEYS:
            draft.add(
                lines.get(str(key), _MISSING_LINE),
                f"unknown front matter key {key!r} (known: {', '.join(_FRONT_MATTER_KEYS)})",
            )
    _check_position(draft, data, lines)
    _check_subject(draft, data, lines)
    _check_preheader(draft, data, lines)
    draft.send_hour = _check_override(draft, data, lines, "send_hour", 23)
    draft.send_minute = _check_override(draft, data, lines, "send_minute", 59)


def _check_position(
    draft: LessonDraft, data: Mapping[object, object], lines: dict[str, int]
) -> None:
    position = data.get("position")
    draft.position_line = lines.get("position", _MISSING_LINE)
    if position is None:
        draft.add(_MISSING_LINE, "position is required (1 for the first lesson)")
    elif not is_int(position) or position < 1:
        draft.add(draft.position_line, f"position must be an integer >= 1, not {position!r}")
    else:
        draft.position = position


def _check_subject(
    draft: LessonDraft, data: Mapping[object, object], lines: dict[str, int]
) -> None:
    subject = data.get("subject")
    line = draft.subject_line = lines.get("subject", _MISSING_LINE)
    if subject is None:
        draft.add(_MISSING_LINE, "subject is required")
    elif not isinstance(subject, str):
        draft.add(line, f"subject must be a string, not {subject!r}")
    elif not subject.strip():
        draft.add(line, "subject is empty")
    else:
        if "\n" in subject or "\r" in subject:
            draft.add(line, "subject must be a single line")
        # Measured on the source: "{{ first_name }}" is longer than most names, so a subject
        # using it errs on the short side rather than being cut off in the inbox.
        if len(subject) > SUBJECT_MAX:
            draft.add(line, f"subject is {len(subject)} characters; at most {SUBJECT_MAX}")
        draft.subject = subject


def _check_preheader(
    draft: LessonDraft, data: Mapping[object, object], lines: dict[str, int]
) -> None:
    preheader = data.get("preheader")
    line = lines.get("preheader", _MISSING_LINE)
    if preheader is None:
        draft.add(_MISSING_LINE, "preheader is required (the inbox preview line after the subject)")
        return
    if not isinstance(preheader, str):
        draft.add(line, f"preheader must be a string, not {preheader!r}")
        return
    text = preheader.strip()
    if "\n" in text:
        draft.add(line, "preheader must be a single line")
    if len(text) < PREHEADER_MIN:
        draft.add(line, f"preheader is {len(text)} characters; at least {PREHEADER_MIN}")
    elif len(text) > PREHEADER_MAX:
        draft.add(line, f"preheader is {len(text)} characters; at most {PREHEADER_MAX}")
    if "{{" in preheader or "{%" in preheader:
        # Unlike the subject, the preheader is sent as written, braces and all.
        draft.add(line, "preheader is not a template: its braces would be sent as is")
    draft.preheader = text


def _check_override(
    draft: LessonDraft, data: Mapping[object, object], lines: dict[str, int], key: str, high: int
) -> int | None:
    """The lesson's own ``send_hour``/``send_minute`` (``0..high``), ``None`` if absent or bad."""
    if key not in data:
        return None
    value = data[key]
    if message := int_range(value, key, 0, high):
        draft.add(lines.get(key, _MISSING_LINE), message)
        return None
    return value if is_int(value) else None
