"""What a checked sequence is at run time: :class:`Lesson`, :class:`Sequence` and the template
rules every lesson satisfies (:data:`TEMPLATE_VARIABLES`, the inbox length limits).

Objects of these types only ever come from :mod:`drip.content.checks` or
:mod:`drip.content.loading`, which build them from folders with no problems at all; everything
else (the renderer, the engine, the dashboard) may rely on them being valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drip.content.triggers import Rule
from drip.schedule import SendWindow

__all__ = [
    "DEFAULT_FORM",
    "DEFAULT_RUNNERS_LAB_URL",
    "PREHEADER_MAX",
    "PREHEADER_MIN",
    "SUBJECT_MAX",
    "TEMPLATE_VARIABLES",
    "Lesson",
    "Sequence",
    "sample_context",
]

TEMPLATE_VARIABLES: frozenset[str] = frozenset(
    {"first_name", "course_name", "lesson_number", "lesson_count", "runners_lab_url", "from_name"}
)
"""The only names a lesson body may use inside ``{{ }}``."""

# Inbox limits: longer subjects get cut off on phones; a preheader shorter than ~20 characters
# lets the client pad the preview with the body's first words, longer ones are truncated anyway.
SUBJECT_MAX = 78
PREHEADER_MIN = 20
PREHEADER_MAX = 110

DEFAULT_RUNNERS_LAB_URL = "https://example.com/runners-lab"
DEFAULT_FORM = "default"
"""The form of a signup that names none; it exists even without a ``forms/default.toml``."""


@dataclass(frozen=True)
class Lesson:
    """One validated lesson. ``body`` is the Jinja/Markdown source after the front matter,
    starting at ``body_line`` (1-based) of ``path``. ``send_hour``/``send_minute`` are the
    lesson's own overrides of the sequence window, ``None`` when it has none."""

    sequence: str
    position: int
    slug: str
    subject: str
    preheader: str
    body: str
    path: Path
    body_line: int
    send_hour: int | None = None
    send_minute: int | None = None

    @property
    def key(self) -> str:
        """Stable identifier, ``"<sequence>/<position>"``."""
        return f"{self.sequence}/{self.position}"


@dataclass(frozen=True)
class Sequence:
    """One validated sequence. ``lessons`` is sorted by position and runs 1..length."""

    slug: str
    name: str
    kind: str
    window: SendWindow
    first_lesson_immediately: bool
    on_complete: str | None
    category: str
    lessons: tuple[Lesson, ...]
    path: Path
    # What starts and ends it (drip.content.triggers); who wins a day (drip.engine.claim);
    # whether someone who completed or left it may go through it again.
    triggers: tuple[Rule, ...] = ()
    exits: tuple[Rule, ...] = ()
    priority: int = 0
    reentry: bool = False

    def lesson_at(self, position: int) -> Lesson | None:
        """The lesson at ``position`` (1-based), or ``None`` past either end."""
        for lesson in self.lessons:
            if lesson.position == position:
                return lesson
        return None

    @property
    def length(self) -> int:
        return len(self.lessons)


def sample_context(runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL) -> dict[str, object]:
    """A value for every name in :data:`TEMPLATE_VARIABLES`, used to test-render lessons.

    No value contains a newline, so a rendered body has the same line numbers as its source.
    """
    return {
        "first_name": "Sam",
        "course_name": "Sample Course",
        "lesson_number": 1,
        "lesson_count": 7,
        "runners_lab_url": runners_lab_url,
        "from_name": "Coach",
    }
