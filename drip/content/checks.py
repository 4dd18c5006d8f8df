"""Check sequences: a ``sequence.toml`` plus Markdown lessons, one folder each.

Layout (:mod:`drip.content.layout`): ``<content_dir>/<slug>/sequence.toml`` and
``<content_dir>/<slug>/NN-some-slug.md``. A lesson file is YAML front matter between two ``---``
lines, then a Markdown body that is a Jinja2 template using only
:data:`~drip.content.types.TEMPLATE_VARIABLES` (``{{ first_name }}``), never statement tags.

Contract: the ``check_*`` functions never raise for bad content; they return every
:class:`~drip.errors.Problem` found, each as ``path:line: message`` with ``path`` built from the
directory exactly as the caller gave it and ``line`` 1-based, sorted by path then line. A
:class:`~drip.content.types.Sequence` is only ever built from a folder with no problems at all.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from drip.content.body_rules import check_source
from drip.content.layout import LESSON_FILE_RE, SEQUENCE_FILE, is_sequence_folder, lesson_files
from drip.content.lesson_file import LessonDraft, check_lesson
from drip.content.sequence_toml import SequenceMeta, check_sequence_file
from drip.content.types import DEFAULT_FORM, DEFAULT_RUNNERS_LAB_URL, Lesson, Sequence
from drip.errors import Problem
from drip.schedule import SendWindow

__all__ = ["LibraryCheck", "check_body", "check_library", "check_sequence", "survey_library"]


def check_body(
    source: str,
    *,
    runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL,
    origin: str = "body",
    markdown: bool = True,
) -> list[Problem]:
    """Check a text written outside a lesson file (a broadcast's body; with ``markdown=False``
    a subject) by the lesson rules: only :data:`~drip.content.types.TEMPLATE_VARIABLES`, no
    statement tags, and for Markdown no raw HTML, no images and only https links.

    Never raises for bad content; returns every problem at once, each reading
    ``origin:line: message``, ``line`` 1-based within ``source``, template problems first (a
    template problem does not hide a Markdown one: see :func:`check_source`).
    """
    found = check_source(source, runners_lab_url, markdown=markdown)
    return [Problem(str(Path(origin)), line, message) for line, message in found]


def check_sequence(
    directory: Path, *, runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL
) -> tuple[Sequence | None, list[Problem]]:
    """Check one sequence folder. Returns ``(sequence, [])`` or ``(None, problems)``.

    Checks only what the folder itself can tell: ``on_complete`` targets are checked by
    :func:`check_library`. ``runners_lab_url`` is substituted when test-rendering lessons, so
    links built from it are checked too. Never raises for bad content.
    """
    result = _check_sequence(Path(directory), runners_lab_url)
    return result.sequence, result.problems


def check_library(
    content_dir: Path,
    *,
    runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL,
    forms: Collection[str] = (DEFAULT_FORM,),
) -> list[Problem]:
    """Check every sequence folder under ``content_dir``; return all problems (empty = fine).

    A missing content directory, or one with no sequence folders, is a problem. A sub-folder is
    a sequence folder if it has a ``sequence.toml`` or any lesson ``.md`` file; hidden folders
    are ignored. ``forms`` are the signup forms' slugs that ``form`` triggers may name.
    """
    return survey_library(content_dir, runners_lab_url=runners_lab_url, forms=forms).problems


@dataclass(frozen=True)
class LibraryCheck:
    """The outcome of checking a content directory: the sequences that are valid on their own
    by slug, and the problems of the whole library. Only when ``problems`` is empty is
    ``sequences`` the complete library."""

    sequences: dict[str, Sequence]
    problems: list[Problem]


def survey_library(
    content_dir: Path,
    *,
    runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL,
    forms: Collection[str] = (DEFAULT_FORM,),
) -> LibraryCheck:
    """Check ``content_dir`` as :func:`check_library` does, keeping the sequences built."""
    content_dir = Path(content_dir)
    if not content_dir.is_dir():
        return LibraryCheck({}, [Problem(str(content_dir), 1, "content directory does not exist")])
    folders = sorted(p for p in content_dir.iterdir() if is_sequence_folder(p))
    if not folders:
        problem = Problem(
            str(content_dir), 1, f"no sequences (expected <slug>/{SEQUENCE_FILE} folders)"
        )
        return LibraryCheck({}, [problem])
    checks = [_check_sequence(folder, runners_lab_url) for folder in folders]
    problems = [p for check in checks for p in check.problems]
    problems += _dangling(checks, forms) + _cycles(checks)
    sequences = {c.folder: c.sequence for c in checks if c.sequence is not None}
    return LibraryCheck(sequences, _sort(problems))


# --------------------------------------------------------------------------- one sequence


@dataclass
class _SequenceCheck:
    directory: Path
    folder: str
    meta: SequenceMeta
    sequence: Sequence | None
    problems: list[Problem]


def _sort(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.path, p.line))


def _check_sequence(directory: Path, runners_lab_url: str) -> _SequenceCheck:
    folder = directory.name or directory.resolve().name
    problems: list[Problem] = []
    if not directory.is_dir():
        problems.append(Problem(str(directory), 1, "sequence folder does not exist"))
        return _SequenceCheck(directory, folder, SequenceMeta(), None, problems)
    info = check_sequence_file(directory, folder, problems)

    drafts = [check_lesson(path, runners_lab_url) for path in lesson_files(directory)]
    for draft in drafts:
        problems.extend(draft.problems)
    if not drafts:
        problems.append(
            Problem(
                str(directory / SEQUENCE_FILE), 1, "no lessons (expected NN-some-slug.md files)"
            )
        )
    _check_positions(drafts, problems)

    sequence = None
    if not problems and info.window is not None:
        sequence = _build_sequence(directory, folder, info, info.window, drafts)
    return _SequenceCheck(directory, folder, info, sequence, _sort(problems))


def _build_sequence(
    directory: Path, folder: str, info: SequenceMeta, window: SendWindow, drafts: list[LessonDraft]
) -> Sequence:
    """The Sequence of a folder whose file and lessons have no problems (``window`` is
    ``info.window``, known to be set)."""
    lessons = tuple(
        Lesson(
            sequence=folder,
            position=d.position,
            slug=d.path.stem,
            subject=d.subject,
            preheader=d.preheader,
            body=d.body,
            path=d.path,
            body_line=d.body_line,
            send_hour=d.send_hour,
            send_minute=d.send_minute,
        )
        for d in sorted(drafts, key=lambda d: d.position or 0)
        if d.position is not None
    )
    return Sequence(
        slug=folder,
        name=info.name,
        kind=info.kind,
        window=window,
        first_lesson_immediately=info.first_lesson_immediately,
        on_complete=info.on_complete,
        category=info.category,
        lessons=lessons,
        path=directory,
        triggers=info.triggers,
        exits=info.exits,
        priority=info.priority,
        reentry=info.reentry,
    )


def _check_positions(drafts: list[LessonDraft], problems: list[Problem]) -> None:
    """Positions unique and contiguous from 1."""
    claimed: dict[int, LessonDraft] = {}
    for draft in drafts:
        position = draft.position
        if position is None:
            # Fall back on the file-name prefix so a lesson with a broken position does not
            # also produce a spurious "position N is missing".
            match = LESSON_FILE_RE.fullmatch(draft.path.stem)
            if match:
                claimed.setdefault(int(match.group(1)), draft)
            continue
        if position in claimed and claimed[position].position == position:
            other = claimed[position].path.name
            problems.append(
                Problem(
                    str(draft.path),
                    draft.position_line,
                    f"position {position} is also used by {other}",
                )
            )
        else:
            claimed[position] = draft
    problems.extend(_gaps(claimed))


def _gaps(claimed: dict[int, LessonDraft]) -> list[Problem]:
    """One problem per run of missing positions, reported on the lesson right after the gap:
    a typo like "position: 100" must not produce ninety problems."""
    if not claimed:
        return []
    top = max(claimed)
    gaps: list[Problem] = []
    previous = 0
    for position in sorted(claimed):
        if position > previous + 1:
            first, last = previous + 1, position - 1
            what = f"position {first} is" if first == last else f"positions {first}..{last} are"
            after = claimed[position]
            gaps.append(
                Problem(
                    str(after.path),
                    after.position_line,
                    f"{what} missing (positions must run 1..{top} without gaps)",
                )
            )
        previous = position
    return gaps


# --------------------------------------------------------------------------- across sequences


@dataclass(frozen=True)
class _Edge:
    """ "Completing ``source`` starts ``target``", with where it is written."""

    source: str
    target: str
    where: str
    line: int


def _edges(checks: list[_SequenceCheck]) -> list[_Edge]:
    """Every hand-over between sequences: ``on_complete`` and ``completed`` triggers."""
    edges = []
    for check in checks:
        file = str(check.directory / SEQUENCE_FILE)
        if (target := check.meta.on_complete) is not None:
            edges.append(_Edge(check.folder, target, file, check.meta.on_complete_line))
        for rule in check.meta.triggers:
            if rule.on == "completed":
                edges.append(_Edge(rule.value, check.folder, file, rule.line))
    return edges


def _dangling(checks: list[_SequenceCheck], forms: Collection[str]) -> list[Problem]:
    """References to a sequence or a form that does not exist."""
    folders = {check.folder for check in checks}
    problems = []
    for check in checks:
        file = str(check.directory / SEQUENCE_FILE)
        parent = check.directory.parent
        if (target := check.meta.on_complete) is not None and target not in folders:
            problems.append(
                Problem(
                    file,
                    check.meta.on_complete_line,
                    f"on_complete {target!r} names no sequence in {parent}",
                )
            )
        for rule in check.meta.triggers:
            if rule.on == "completed" and rule.value not in folders:
                message = f"trigger on completed: {rule.value!r} names no sequence in {parent}"
                problems.append(Problem(file, rule.line, message))
            elif rule.on == "form" and rule.value not in forms:
                known = ", ".join(sorted(forms))
                message = f"trigger on form: {rule.value!r} names no form (known: {known})"
                problems.append(Problem(file, rule.line, message))
    return problems


def _cycles(checks: list[_SequenceCheck]) -> list[Problem]:
    """Each loop of hand-overs once, on the edge leaving its alphabetically first member."""
    edges = _edges(checks)
    successors: dict[str, list[str]] = {}
    for edge in edges:
        successors.setdefault(edge.source, []).append(edge.target)
    problems: list[Problem] = []
    reported: set[str] = set()
    for start in sorted(successors):
        loop = _loop_through(start, successors)
        if not loop or reported.intersection(loop):
            continue
        reported.update(loop)
        turn = loop.index(min(loop))
        ordered = [*loop[turn:], *loop[:turn], loop[turn]]
        leaving = next(e for e in edges if e.source == ordered[0] and e.target == ordered[1])
        problems.append(
            Problem(
                leaving.where,
                leaving.line,
                f"sequence cycle {' -> '.join(ordered)}: subscribers would never finish",
            )
        )
    return problems


def _loop_through(start: str, successors: dict[str, list[str]]) -> list[str]:
    """A loop of hand-overs that returns to ``start``, as a path, or ``[]`` (depth-first)."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    visited: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in successors.get(node, ()):
            if nxt == start:
                return path
            if nxt not in visited:
                visited.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return []
