"""What a broadcast's subject, preheader and body must be, every problem found at once.

The body and the subject follow the lesson rules (:func:`drip.content.checks.check_body`): only
:data:`~drip.content.types.TEMPLATE_VARIABLES` minus the lesson-only :data:`LESSON_ONLY`, no
statement tags; the body is Markdown with no raw HTML, no images and https links only. The
subject is one line of at most :data:`~drip.content.types.SUBJECT_MAX` characters, the
preheader plain text of at most :data:`~drip.content.types.PREHEADER_MAX`.

Contract: :func:`content_problems` never raises for bad content; it returns every problem of
every field, in field order (subject, preheader, body). A field is checked whatever the others
hold; within a field, only a problem that leaves nothing sensible to check (a NUL character, an
empty or oversized text) stops that field's checks. :class:`InvalidBroadcast` carries them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from jinja2 import Environment, TemplateSyntaxError, nodes
from jinja2 import meta as jinja_meta

from drip.content.checks import check_body
from drip.content.types import PREHEADER_MAX, SUBJECT_MAX
from drip.errors import InvalidInput, Problem
from drip.subscribers.validation import storable_text

__all__ = [
    "BODY_MAX",
    "LESSON_ONLY",
    "FieldProblem",
    "InvalidBroadcast",
    "collect",
    "content_problems",
    "raise_problems",
]

LESSON_ONLY = ("lesson_count", "lesson_number")
# Longer bodies are refused before the template and Markdown checks run on them.
BODY_MAX = 100_000
_PARSER = Environment()  # parsing only, to find names: nothing is rendered with it

T = TypeVar("T")


@dataclass(frozen=True)
class FieldProblem:
    """One problem of one field: ``field: message``, or ``field:line: message`` when it sits on
    a line (1-based) of a multi-line text."""

    field: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.field if self.line is None else f"{self.field}:{self.line}"
        return f"{where}: {self.message}"


class InvalidBroadcast(InvalidInput):
    """Every problem of a broadcast at once (at least one).

    ``field`` is the first problem's field (so a client that shows one field shows a real
    one); ``message`` lists every problem, one a line, each naming its field, and is also what
    ``str()`` gives: ``subject: is required`` / ``body_md:3: raw HTML '<b>' is not allowed...``.
    """

    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        if not problems:
            raise ValueError("InvalidBroadcast needs at least one problem")
        self.problems = tuple(problems)
        super().__init__(problems[0].field, "\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return self.message


def raise_problems(problems: Sequence[FieldProblem]) -> None:
    """Raise :class:`InvalidBroadcast` if there is any problem."""
    if problems:
        raise InvalidBroadcast(problems)


def collect(problems: list[FieldProblem], check: Callable[[], T]) -> T | None:
    """Run ``check``; if it raises :class:`InvalidInput`, add its problems to ``problems`` and
    return ``None``, so the caller carries on to the next field."""
    try:
        return check()
    except InvalidBroadcast as err:
        problems.extend(err.problems)
    except InvalidInput as err:
        problems.append(FieldProblem(err.field, err.message))
    return None


def content_problems(
    subject: str, preheader: str, body_md: str, runners_lab_url: str
) -> list[FieldProblem]:
    """Every problem of a broadcast's subject, preheader and body (empty: all fine)."""
    return [
        *_subject_problems(subject, runners_lab_url),
        *_preheader_problems(preheader),
        *_body_problems(body_md, runners_lab_url),
    ]


def _subject_problems(subject: str, runners_lab_url: str) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if collect(problems, lambda: storable_text(subject, "subject")) is None:
        return problems
    subject = subject.strip()
    if not subject:
        return [FieldProblem("subject", "is required")]
    if "\n" in subject or "\r" in subject:
        problems.append(FieldProblem("subject", "must be one line"))
    if len(subject) > SUBJECT_MAX:
        problems.append(
            FieldProblem("subject", f"is {len(subject)} characters; at most {SUBJECT_MAX}")
        )
    found = check_body(subject, runners_lab_url=runners_lab_url, origin="subject", markdown=False)
    problems += _from_check_body("subject", found)
    return problems + _lesson_only("subject", subject)


def _preheader_problems(preheader: str) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if collect(problems, lambda: storable_text(preheader, "preheader")) is None:
        return problems
    if len(preheader) > PREHEADER_MAX:
        problems.append(
            FieldProblem("preheader", f"is {len(preheader)} characters; at most {PREHEADER_MAX}")
        )
    if "{{" in preheader or "{%" in preheader:
        problems.append(
            FieldProblem("preheader", "is not a template: its braces would be sent as is")
        )
    return problems


def _body_problems(body_md: str, runners_lab_url: str) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if collect(problems, lambda: storable_text(body_md, "body_md")) is None:
        return problems
    if not body_md.strip():
        return [FieldProblem("body_md", "is empty")]
    if len(body_md) > BODY_MAX:
        return [FieldProblem("body_md", f"is {len(body_md)} characters; at most {BODY_MAX}")]
    found = check_body(body_md, runners_lab_url=runners_lab_url, origin="body_md")
    return _from_check_body("body_md", found) + _lesson_only("body_md", body_md)


def _from_check_body(field: str, found: Iterable[Problem]) -> list[FieldProblem]:
    """check_body's problems (their ``path`` is the field) as field problems."""
    return [FieldProblem(field, p.message, p.line) for p in found]


def _lesson_only(field: str, source: str) -> list[FieldProblem]:
    """Each lesson-only variable the source uses, on the line where it first appears."""
    try:
        ast = _PARSER.parse(source)
    except (TemplateSyntaxError, RecursionError):  # check_body has reported it already
        return []
    used = jinja_meta.find_undeclared_variables(ast) & set(LESSON_ONLY)
    first_line: dict[str, int] = {}
    for name in ast.find_all(nodes.Name):
        if name.name in used:
            first_line.setdefault(name.name, name.lineno)
    return [
        FieldProblem(
            field,
            f"{name} only exists in lessons: a broadcast has no lesson number or count",
            first_line.get(name, 1),
        )
        for name in sorted(used, key=lambda n: (first_line.get(n, 1), n))
    ]
