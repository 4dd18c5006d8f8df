"""The course pages: every lesson and upsell email with its figures, its preview and checks.

Figures come from :func:`drip.reports.stats.collect` (cached, see
:mod:`drip.web.dashboard.figures`).
The checks are ``drip lessons check`` run afresh on the content folder, so a lesson edited on
disk since the server started shows its problems here before the next restart refuses it.
Previews are rendered for the sample reader by a renderer without tracking.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import Response

from drip.content.loading import survey_content
from drip.content.preview import SampleEmail, sample_email
from drip.content.render import Renderer
from drip.content.types import Lesson, Sequence
from drip.errors import Problem
from drip.reports.stats import EmailStats
from drip.web.dashboard import figures
from drip.web.dashboard.rendering import admin_page, email_frame
from drip.web.dashboard.security import Admin, DashboardRoute, NotFound
from drip.web.deps import RuntimeDep, runtime

if TYPE_CHECKING:
    from drip.runtime import Runtime

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


@dataclass(frozen=True)
class LessonRow:
    sequence: Sequence
    lesson: Lesson
    stats: EmailStats
    open_rate: str
    click_rate: str
    problems: list[Problem]


def _preview_renderer(request: Request) -> Renderer:
    """One renderer per app without tracking (no pixel, no rewritten links in previews)."""
    renderer: Renderer | None = getattr(request.app.state, "preview_renderer", None)
    if renderer is None:
        renderer = Renderer(runtime(request).settings)
        request.app.state.preview_renderer = renderer
    return renderer


def _problems(rt: Runtime) -> dict[str, list[Problem]]:
    found: dict[str, list[Problem]] = defaultdict(list)
    settings = rt.settings
    for problem in survey_content(settings).problems:
        found[problem.path].append(problem)
    return found


def _row(seq: Sequence, lesson: Lesson, stats: EmailStats, problems: list[Problem]) -> LessonRow:
    return LessonRow(
        seq,
        lesson,
        stats,
        figures.rate(stats.opened, stats.sent),
        figures.rate(stats.clicked, stats.sent),
        problems,
    )


def _find(rt: Runtime, slug: str, position: int) -> tuple[Sequence, Lesson]:
    seq = rt.library.get(slug)
    lesson = seq.lesson_at(position) if seq is not None else None
    if seq is None or lesson is None:
        raise NotFound("lesson")
    return seq, lesson


@router.get("/course")
def course(request: Request, admin: Admin, rt: RuntimeDep) -> Response:
    stats, stats_at = figures.stats(request)
    per_key = figures.by_key(stats)
    problems = _problems(rt)
    sequences = []
    for seq in rt.library.values():
        rows = [
            _row(seq, lesson, per_key[lesson.key], problems.get(str(lesson.path), []))
            for lesson in seq.lessons
        ]
        own = problems.get(str(seq.path / "sequence.toml"), [])
        sequences.append((seq, rows, own))
    context = {
        "section": "course",
        "sequences": sequences,
        "stats_at": stats_at,
        "problem_count": sum(len(p) for p in problems.values()),
    }
    return admin_page(request, "course.html", context)


def _sample(request: Request, slug: str, position: int) -> tuple[Sequence, Lesson, SampleEmail]:
    rt = runtime(request)
    seq, lesson = _find(rt, slug, position)
    email = sample_email(_preview_renderer(request), seq, lesson, public_url=rt.settings.public_url)
    return seq, lesson, email


@router.get("/course/{slug}/{position}")
def lesson_page(
    request: Request, admin: Admin, rt: RuntimeDep, slug: str, position: int
) -> Response:
    seq, lesson, email = _sample(request, slug, position)
    stats, stats_at = figures.stats(request)
    problems = _problems(rt).get(str(lesson.path), [])
    context = {
        "section": "course",
        "row": _row(seq, lesson, figures.by_key(stats)[lesson.key], problems),
        "email": email,
        "stats_at": stats_at,
        "frame_url": f"/admin/course/{seq.slug}/{lesson.position}/email.html",
    }
    return admin_page(request, "lesson.html", context)


@router.get("/course/{slug}/{position}/email.html")
def lesson_html(request: Request, admin: Admin, slug: str, position: int) -> Response:
    _, _, email = _sample(request, slug, position)
    return email_frame(email.html)
