"""Load and check drip sequences: a ``sequence.toml`` plus Markdown lessons, one folder each.

Layout: ``<content_dir>/<slug>/sequence.toml`` and ``<content_dir>/<slug>/NN-some-slug.md``. A
lesson file is YAML front matter between two ``---`` lines, then a Markdown body that is a Jinja2
template using only :data:`TEMPLATE_VARIABLES` (``{{ first_name }}``), never statement tags.

Contract: the ``check_*`` functions never raise for bad content; they return every
:class:`~drip.errors.Problem` found, each as ``path:line: message`` with ``path`` built from the
directory exactly as the caller gave it and ``line`` 1-based. The ``load_*`` functions return
fully validated objects or raise :class:`~drip.errors.ContentError` carrying all problems. A
:class:`Sequence` is only ever built from a folder with no problems at all.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import traceback
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2 import meta as jinja_meta
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt
from markdown_it.token import Token

from drip.errors import ContentError, Problem
from drip.schedule import SendWindow, parse_send_days

__all__ = [
    "PREHEADER_MAX",
    "PREHEADER_MIN",
    "SUBJECT_MAX",
    "TEMPLATE_VARIABLES",
    "Lesson",
    "Sequence",
    "check_body",
    "check_library",
    "check_sequence",
    "load_library",
    "load_sequence",
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
SEQUENCE_FILE = "sequence.toml"

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
)
_FIRST_LESSON = {"immediately": True, "next_send_hour": False}
_FRONT_MATTER_KEYS = ("position", "subject", "preheader", "send_hour", "send_minute")
# Slugs end up in lesson keys ("slug/3") and URLs; categories in analytics labels.
_SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_CATEGORY_RE = re.compile(r"[a-z0-9-]+")
_CATEGORY_MAX = 40
_LESSON_FILE_RE = re.compile(r"(\d{2,})-[a-z0-9]+(?:-[a-z0-9]+)*")
_TOML_AT_LINE_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END_RE = re.compile(r"\s*\(at end of document\)$")
_FENCE = "---"

# The sandbox keeps an expression like ``{{ first_name.__class__ }}`` from reaching Python
# internals; StrictUndefined turns a bad attribute into an error instead of an empty string.
# keep_trailing_newline keeps rendered lines aligned with source lines for markdown-it's .map.
_JINJA = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
# The "commonmark" preset parses raw HTML into html_block/html_inline tokens, which is exactly
# what lets us find and reject it.
_MARKDOWN = MarkdownIt("commonmark")
# markdown-it quietly turns [x](javascript:...) into literal text; accept every URL here so such
# links surface as link tokens and fail the https rule with a clear message instead.
_MARKDOWN.validateLink = lambda url: True  # type: ignore[method-assign]


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


# --------------------------------------------------------------------------- helpers


def _is_int(value: object) -> TypeGuard[int]:
    # YAML/TOML ``true`` loads as bool, which is an int subclass; it is never a valid number here.
    return isinstance(value, int) and not isinstance(value, bool)


def _read_text(path: Path, problems: list[Problem]) -> str | None:
    """The file's text with newlines normalised to ``\\n``, or ``None`` after adding a problem."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        problems.append(Problem(str(path), 1, f"cannot read file: {err.strerror or err}"))
        return None
    try:
        # utf-8-sig: a BOM from a Windows editor is harmless, so drop it rather than complain.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        bad_byte = raw[err.start]
        problems.append(
            Problem(str(path), line, f"not valid UTF-8 (byte 0x{bad_byte:02x}); save it as UTF-8")
        )
        return None
    # markdown-it and Jinja count lines on \n; normalise so every line number agrees.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _toml_key_line(text: str, key: str) -> int:
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


def _int_range(value: object, name: str, low: int, high: int) -> str | None:
    """A message if ``value`` is not an int in ``low..high``, else ``None``."""
    if not _is_int(value):
        return f"{name} must be an integer {low}..{high}, not {value!r}"
    if not low <= value <= high:
        return f"{name} is {value}; must be {low}..{high}"
    return None


# --------------------------------------------------------------------------- sequence.toml


@dataclass
class _SequenceMeta:
    """What sequence.toml said, kept even when broken so library checks can still run."""

    name: str = ""
    kind: str = ""
    window: SendWindow | None = None
    first_lesson_immediately: bool = True
    on_complete: str | None = None
    on_complete_line: int = 1
    category: str = ""


def _check_sequence_file(directory: Path, folder: str, problems: list[Problem]) -> _SequenceMeta:
    path = directory / SEQUENCE_FILE
    where = str(path)
    info = _SequenceMeta()
    if not path.is_file():
        problems.append(Problem(where, 1, f"{SEQUENCE_FILE} is missing"))
        return info
    text = _read_text(path, problems)
    if text is None:
        return info
    try:
        data = tomllib.loads(text)
    except RecursionError:
        problems.append(Problem(where, 1, "not valid TOML: nested too deeply"))
        return info
    except tomllib.TOMLDecodeError as err:
        message, line = str(err), 1
        if match := _TOML_AT_LINE_RE.search(message):
            line = int(match.group(1))
            message = message[: match.start()]
        elif match := _TOML_AT_END_RE.search(message):
            line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
            message = message[: match.start()] + " at end of file"
        problems.append(Problem(where, line, f"not valid TOML: {message}"))
        return info

    def bad(key: str, message: str) -> None:
        problems.append(Problem(where, _toml_key_line(text, key), message))

    for key in data:
        if key not in _SEQUENCE_KEYS:
            # A typo like ``send_minutes`` would otherwise silently fall back to the default.
            bad(key, f"unknown key {key!r} (known: {', '.join(_SEQUENCE_KEYS)})")

    for key in ("slug", "name", "kind"):
        value = data.get(key)
        if value is None:
            problems.append(Problem(where, 1, f"{key} is required"))
        elif not isinstance(value, str) or not value.strip():
            bad(key, f"{key} must be a non-empty string, not {value!r}")
    slug = data.get("slug")
    if isinstance(slug, str) and slug.strip():
        if slug != folder:
            bad("slug", f"slug {slug!r} must equal the folder name {folder!r}")
        elif not _SLUG_RE.fullmatch(slug):
            bad("slug", f"slug {slug!r} must be lowercase words joined by '-'")
    if isinstance(data.get("name"), str):
        info.name = data["name"]
    if isinstance(data.get("kind"), str):
        info.kind = data["kind"]

    hour = data.get("send_hour")
    minute = data.get("send_minute", 0)
    days: frozenset[int] | None = frozenset(range(7))
    window_ok = True
    if hour is None:
        problems.append(Problem(where, 1, "send_hour is required (local hour 0..23)"))
        window_ok = False
    elif error := _int_range(hour, "send_hour", 0, 23):
        bad("send_hour", error)
        window_ok = False
    if error := _int_range(minute, "send_minute", 0, 59):
        bad("send_minute", error)
        window_ok = False
    if "send_days" in data:
        names = data["send_days"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            bad("send_days", f'send_days must be a list like ["mon", "wed"], not {names!r}')
            days = None
        else:
            try:
                days = parse_send_days(names)
            except ValueError as err:
                bad("send_days", f"bad send_days: {err}")
                days = None
    if window_ok and days is not None and _is_int(hour) and _is_int(minute):
        info.window = SendWindow(hour=hour, minute=minute, days=days)

    first = data.get("first_lesson", "immediately")
    if isinstance(first, str) and first in _FIRST_LESSON:
        info.first_lesson_immediately = _FIRST_LESSON[first]
    else:
        choices = " or ".join(repr(c) for c in _FIRST_LESSON)
        bad("first_lesson", f"first_lesson must be {choices}, not {first!r}")

    if "on_complete" in data:
        target = data["on_complete"]
        info.on_complete_line = _toml_key_line(text, "on_complete")
        if not isinstance(target, str) or not _SLUG_RE.fullmatch(target):
            bad("on_complete", f"on_complete must be a sequence slug, not {target!r}")
        else:
            info.on_complete = target

    if "category" in data:
        category = data["category"]
        if not isinstance(category, str) or not _CATEGORY_RE.fullmatch(category):
            bad("category", f"category must match [a-z0-9-]+, not {category!r}")
        elif len(category) > _CATEGORY_MAX:
            bad("category", f"category is {len(category)} characters; at most {_CATEGORY_MAX}")
        else:
            info.category = category
    elif info.kind:
        # The category defaults to the kind, and it ends up as a tracking label, so it must
        # satisfy the category rules too.
        if _CATEGORY_RE.fullmatch(info.kind) and len(info.kind) <= _CATEGORY_MAX:
            info.category = info.kind
        else:
            bad("kind", f"kind {info.kind!r} is not a valid category; set category explicitly")
    return info


# --------------------------------------------------------------------------- lessons


@dataclass
class _LessonDraft:
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
        self.problems.append(Problem(str(self.path), line, message))


def _split_front_matter(draft: _LessonDraft, text: str) -> tuple[str, int] | None:
    """Split off the front matter; return ``(yaml_text, closing_line)`` or ``None`` (reported).

    Sets ``draft.body`` and ``draft.body_line``; the body is kept byte-for-byte so that line
    numbers inside it map straight back to the file.
    """
    lines = text.split("\n")
    if lines[0].rstrip() != _FENCE:
        draft.add(1, "missing front matter: the file must start with a '---' line")
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() == _FENCE:
            draft.body = "\n".join(lines[index + 1 :])
            draft.body_line = index + 2
            return "\n".join(lines[1:index]), index + 1
    draft.add(1, "front matter is never closed: add a '---' line after it")
    return None


def _load_front_matter(
    draft: _LessonDraft, source: str
) -> tuple[dict[object, object], dict[str, int]] | None:
    """Parse YAML front matter into its mapping and each key's file line.

    Empty front matter is an empty mapping (so the missing required fields get reported);
    invalid YAML or a non-mapping is one problem and ``None``: field checks on a half-read
    document would only add noise.
    """
    offset = 2  # the YAML text starts on the line after the opening fence
    loader: yaml.SafeLoader | None = None
    try:
        # The constructor already reads the stream and rejects control characters.
        loader = yaml.SafeLoader(source)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + offset if mark is not None else offset
        draft.add(line, f"front matter is not valid YAML: {err.problem or err.context}")
        return None
    except RecursionError:
        draft.add(offset, "front matter is nested too deeply")
        return None
    except yaml.YAMLError as err:  # ReaderError (a control character) carries no mark
        position = getattr(err, "position", 0)
        line = source.count("\n", 0, position) + offset
        draft.add(line, f"front matter is not valid YAML: {str(err).splitlines()[0]}")
        return None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        return {}, {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        draft.add(offset, "front matter must be a mapping of 'key: value' lines")
        return None
    lines: dict[str, int] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        line = key_node.start_mark.line + offset
        if key_node.value in lines:
            # PyYAML silently keeps the last value; two subjects is always a mistake.
            first = lines[key_node.value]
            draft.add(line, f"front matter key {key_node.value!r} repeats line {first}")
        else:
            lines[key_node.value] = line
    return data, lines


def _check_fields(
    draft: _LessonDraft, data: Mapping[object, object], lines: dict[str, int]
) -> None:
    def line_of(key: str) -> int:
        return lines.get(key, 2)

    for key in data:
        if not isinstance(key, str) or key not in _FRONT_MATTER_KEYS:
            draft.add(
                lines.get(str(key), 2),
                f"unknown front matter key {key!r} (known: {', '.join(_FRONT_MATTER_KEYS)})",
            )

    position = data.get("position")
    draft.position_line = line_of("position")
    if position is None:
        draft.add(2, "position is required (1 for the first lesson)")
    elif not _is_int(position) or position < 1:
        draft.add(draft.position_line, f"position must be an integer >= 1, not {position!r}")
    else:
        draft.position = position

    subject = data.get("subject")
    draft.subject_line = line_of("subject")
    if subject is None:
        draft.add(2, "subject is required")
    elif not isinstance(subject, str):
        draft.add(line_of("subject"), f"subject must be a string, not {subject!r}")
    elif not subject.strip():
        draft.add(line_of("subject"), "subject is empty")
    else:
        if "\n" in subject or "\r" in subject:
            draft.add(line_of("subject"), "subject must be a single line")
        # Measured on the source: "{{ first_name }}" is longer than most names, so a subject
        # using it errs on the short side rather than being cut off in the inbox.
        if len(subject) > SUBJECT_MAX:
            draft.add(
                line_of("subject"), f"subject is {len(subject)} characters; at most {SUBJECT_MAX}"
            )
        draft.subject = subject

    preheader = data.get("preheader")
    if preheader is None:
        draft.add(2, "preheader is required (the inbox preview line after the subject)")
    elif not isinstance(preheader, str):
        draft.add(line_of("preheader"), f"preheader must be a string, not {preheader!r}")
    else:
        size = len(preheader.strip())
        if "\n" in preheader.strip():
            draft.add(line_of("preheader"), "preheader must be a single line")
        if size < PREHEADER_MIN:
            draft.add(
                line_of("preheader"),
                f"preheader is {size} characters; at least {PREHEADER_MIN}",
            )
        elif size > PREHEADER_MAX:
            draft.add(
                line_of("preheader"), f"preheader is {size} characters; at most {PREHEADER_MAX}"
            )
        if "{{" in preheader or "{%" in preheader:
            # Unlike the subject, the preheader is sent as written, braces and all.
            draft.add(
                line_of("preheader"), "preheader is not a template: its braces would be sent as is"
            )
        draft.preheader = preheader.strip()

    if "send_hour" in data:
        hour = data["send_hour"]
        if message := _int_range(hour, "send_hour", 0, 23):
            draft.add(line_of("send_hour"), message)
        elif _is_int(hour):
            draft.send_hour = hour
    if "send_minute" in data:
        minute = data["send_minute"]
        if message := _int_range(minute, "send_minute", 0, 59):
            draft.add(line_of("send_minute"), message)
        elif _is_int(minute):
            draft.send_minute = minute


def _check_template(source: str, runners_lab_url: str) -> tuple[str | None, list[tuple[int, str]]]:
    """Check one Jinja source (a body or a subject) the way lessons are rendered.

    Returns the text rendered with :func:`sample_context` (``None`` if it can't be trusted) and
    ``(line, message)`` problems, ``line`` being 1-based within ``source``.
    """
    found: list[tuple[int, str]] = []
    try:
        ast = _JINJA.parse(source)
        template = _JINJA.from_string(ast)  # compiles: unknown filters/tests fail here
    except TemplateSyntaxError as err:
        return None, [(err.lineno or 1, f"template syntax error: {err.message}")]
    except RecursionError:
        return None, [(1, "template expression is nested too deeply")]

    tokens = list(_JINJA.lex(source))
    for index, (lineno, kind, _value) in enumerate(tokens):
        if kind == "raw_begin":
            name = "raw"
        elif kind == "block_begin":
            following = [v for _, k, v in tokens[index + 1 : index + 3] if k == "name"]
            name = following[0] if following else "?"
            if name.startswith("end") or name in ("else", "elif"):
                continue  # its opening tag is reported already
        else:
            continue
        found.append(
            (
                lineno,
                f"statement tag {{% {name} %}} is not allowed: lessons are content, not code "
                "(use only {{ variables }})",
            )
        )

    unknown = jinja_meta.find_undeclared_variables(ast) - TEMPLATE_VARIABLES
    if unknown:
        first_line: dict[str, int] = {}
        for name_node in ast.find_all(nodes.Name):
            if name_node.name in unknown:
                first_line.setdefault(name_node.name, name_node.lineno)
        known = ", ".join(sorted(TEMPLATE_VARIABLES))
        for name in sorted(unknown, key=lambda n: (first_line.get(n, 1), n)):
            close = difflib.get_close_matches(name, TEMPLATE_VARIABLES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            found.append(
                (
                    first_line.get(name, 1),
                    f"unknown template variable {name!r} ({hint}known: {known})",
                )
            )
    if found:
        return None, found  # rendering would only repeat these problems as errors

    try:
        return template.render(sample_context(runners_lab_url)), []
    except Exception as err:  # any failure of author content is a problem, never a crash
        # Jinja rewrites tracebacks so template frames carry the template's own line numbers.
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == "<template>"]
        line = (frames[-1].lineno if frames else None) or 1
        return None, [(line, f"rendering failed: {type(err).__name__}: {err}")]


def _inline_tokens(tokens: list[Token]) -> Iterator[tuple[int, Token]]:
    """Every token with its 0-based line in the source, descending into inline children."""
    for token in tokens:
        line = token.map[0] if token.map else 0
        yield line, token
        # Inline children have no map; count line breaks to place them on the right line.
        for child in token.children or []:
            yield line, child
            if child.type in ("softbreak", "hardbreak"):
                line += 1


def _check_https(href: str) -> bool:
    if href.startswith("mailto:"):
        return len(href) > len("mailto:")
    try:
        parts = urllib.parse.urlsplit(href)
        return parts.scheme == "https" and bool(parts.hostname)
    except ValueError:  # e.g. a malformed IPv6 host
        return False


def _check_markdown(draft: _LessonDraft, rendered: str) -> None:
    """Raw HTML, images and non-https links in the rendered Markdown."""
    html_lines: set[int] = set()
    for line, token in _inline_tokens(_MARKDOWN.parse(rendered)):
        at = draft.body_line + line
        if token.type in ("html_block", "html_inline"):
            if at in html_lines:
                continue  # one report per line: "<b>x</b>" is one mistake, not two
            html_lines.add(at)
            snippet = token.content.strip().split("\n")[0][:40]
            draft.add(at, f"raw HTML {snippet!r} is not allowed: write Markdown")
        elif token.type == "image":
            src = str(token.attrGet("src") or "")
            draft.add(at, f"image {src!r} is not allowed: lessons are text only")
        elif token.type == "link_open":
            href = str(token.attrGet("href") or "")
            if not _check_https(href):
                draft.add(at, f"link {href!r} must be an absolute https URL")


def check_body(
    source: str,
    *,
    runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL,
    origin: str = "body",
    markdown: bool = True,
) -> list[Problem]:
    """Check a text written outside a lesson file (a broadcast's body; with ``markdown=False``
    a subject) by the lesson rules: only :data:`TEMPLATE_VARIABLES`, no statement tags, and for
    Markdown no raw HTML, no images and only https links.

    Never raises for bad content; each problem reads ``origin:line: message``, ``line`` 1-based
    within ``source``.
    """
    draft = _LessonDraft(path=Path(origin))
    rendered, found = _check_template(source, runners_lab_url)
    for line, message in found:
        draft.add(line, message)
    if markdown and rendered is not None:
        _check_markdown(draft, rendered)
    return draft.problems


def _check_lesson(path: Path, runners_lab_url: str) -> _LessonDraft:
    draft = _LessonDraft(path=path)
    try:
        _check_lesson_into(draft, runners_lab_url)
    except Exception as err:
        # Last resort: known failure modes are reported precisely where they happen, but a
        # content check must end in a problem report, never in a traceback for an author.
        draft.add(1, f"could not check this lesson: {type(err).__name__}: {err}")
    return draft


def _check_lesson_into(draft: _LessonDraft, runners_lab_url: str) -> None:
    name = _LESSON_FILE_RE.fullmatch(draft.path.stem)
    if not name:
        draft.add(1, "file name must look like NN-some-slug.md (position, then lowercase words)")
    text = _read_text(draft.path, draft.problems)
    if text is None:
        return
    split = _split_front_matter(draft, text)
    if split is None:
        return
    source, closing_line = split
    front_matter = _load_front_matter(draft, source)
    if front_matter is not None:
        _check_fields(draft, *front_matter)
    if name and draft.position is not None and int(name.group(1)) != draft.position:
        draft.add(
            draft.position_line,
            f"file name starts with {name.group(1)} but position is {draft.position}",
        )
    if draft.subject:
        # The renderer treats the subject as a template too (``{{ first_name }}, ...``), so it
        # must pass the same checks as the body; a failure here would otherwise surface at send
        # time. All its problems sit on the subject's line.
        _, found = _check_template(draft.subject, runners_lab_url)
        for _line, message in found:
            draft.add(draft.subject_line, f"subject: {message}")
    if not draft.body.strip():
        # Point at the first body line if the file has one, else at the closing fence.
        has_body_line = draft.body_line <= text.rstrip("\n").count("\n") + 1
        draft.add(draft.body_line if has_body_line else closing_line, "body is empty")
        return
    rendered, found = _check_template(draft.body, runners_lab_url)
    for line, message in found:
        draft.add(draft.body_line + line - 1, message)
    if rendered is not None:
        _check_markdown(draft, rendered)


def _lesson_files(directory: Path) -> list[Path]:
    """Candidate lesson files: ``*.md`` except README.md and hidden/editor files, by name."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix == ".md"
        and p.is_file()
        and p.name.lower() != "readme.md"
        and not p.name.startswith((".", "#", "~"))
    )


def _check_positions(drafts: list[_LessonDraft], problems: list[Problem]) -> None:
    """Positions unique and contiguous from 1."""
    claimed: dict[int, _LessonDraft] = {}
    for draft in drafts:
        position = draft.position
        if position is None:
            # Fall back on the file-name prefix so a lesson with a broken position does not
            # also produce a spurious "position N is missing".
            match = _LESSON_FILE_RE.fullmatch(draft.path.stem)
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
    if not claimed:
        return
    top = max(claimed)
    present = sorted(claimed)
    # One problem per run of missing positions: a typo like "position: 100" must not produce
    # ninety problems. Each is reported on the lesson right after the gap.
    previous = 0
    for position in present:
        if position > previous + 1:
            first, last = previous + 1, position - 1
            what = f"position {first} is" if first == last else f"positions {first}..{last} are"
            after = claimed[position]
            problems.append(
                Problem(
                    str(after.path),
                    after.position_line,
                    f"{what} missing (positions must run 1..{top} without gaps)",
                )
            )
        previous = position


# --------------------------------------------------------------------------- public API


@dataclass
class _SequenceCheck:
    directory: Path
    folder: str
    meta: _SequenceMeta
    sequence: Sequence | None
    problems: list[Problem]


def _sort(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.path, p.line))


def _check_sequence(directory: Path, runners_lab_url: str) -> _SequenceCheck:
    folder = directory.name or directory.resolve().name
    problems: list[Problem] = []
    if not directory.is_dir():
        problems.append(Problem(str(directory), 1, "sequence folder does not exist"))
        return _SequenceCheck(directory, folder, _SequenceMeta(), None, problems)
    info = _check_sequence_file(directory, folder, problems)

    drafts = [_check_lesson(path, runners_lab_url) for path in _lesson_files(directory)]
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
        sequence = Sequence(
            slug=folder,
            name=info.name,
            kind=info.kind,
            window=info.window,
            first_lesson_immediately=info.first_lesson_immediately,
            on_complete=info.on_complete,
            category=info.category,
            lessons=lessons,
            path=directory,
        )
    return _SequenceCheck(directory, folder, info, sequence, _sort(problems))


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


def load_sequence(directory: Path, *, runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL) -> Sequence:
    """Like :func:`check_sequence`, but raise :class:`ContentError` if there is any problem."""
    sequence, problems = check_sequence(directory, runners_lab_url=runners_lab_url)
    if problems or sequence is None:
        raise ContentError(problems)
    return sequence


def _is_sequence_folder(path: Path) -> bool:
    if not path.is_dir() or path.name.startswith("."):
        return False
    # A folder of lessons whose sequence.toml is misnamed must not be skipped silently.
    return (path / SEQUENCE_FILE).is_file() or any(
        p.suffix == ".md" and p.name.lower() != "readme.md" for p in path.iterdir()
    )


def _check_library(content_dir: Path, runners_lab_url: str) -> list[_SequenceCheck] | Problem:
    if not content_dir.is_dir():
        return Problem(str(content_dir), 1, "content directory does not exist")
    folders = sorted(p for p in content_dir.iterdir() if _is_sequence_folder(p))
    if not folders:
        return Problem(
            str(content_dir), 1, f"no sequences (expected <slug>/{SEQUENCE_FILE} folders)"
        )
    return [_check_sequence(folder, runners_lab_url) for folder in folders]


def _library_problems(checks: list[_SequenceCheck]) -> list[Problem]:
    """Every sequence's own problems plus on_complete targets that are missing or loop."""
    problems = [p for check in checks for p in check.problems]
    by_slug = {check.folder: check for check in checks}
    for check in checks:
        target = check.meta.on_complete
        if target is not None and target not in by_slug:
            problems.append(
                Problem(
                    str(check.directory / SEQUENCE_FILE),
                    check.meta.on_complete_line,
                    f"on_complete {target!r} names no sequence in {check.directory.parent}",
                )
            )
    # Each sequence has at most one successor, so a cycle is found by walking the chain.
    reported: set[str] = set()
    for start in sorted(by_slug):
        chain: list[str] = []
        slug: str | None = start
        while slug is not None and slug in by_slug and slug not in chain:
            chain.append(slug)
            slug = by_slug[slug].meta.on_complete
        if slug is None or slug not in chain:
            continue
        loop = chain[chain.index(slug) :]
        if reported.intersection(loop):
            continue
        reported.update(loop)
        # Report it once, on the alphabetically first member, so the message is deterministic.
        turn = loop.index(min(loop))
        ordered = [*loop[turn:], *loop[:turn], loop[turn]]
        first = by_slug[ordered[0]]
        problems.append(
            Problem(
                str(first.directory / SEQUENCE_FILE),
                first.meta.on_complete_line,
                f"on_complete cycle {' -> '.join(ordered)}: subscribers would never finish",
            )
        )
    return _sort(problems)


def check_library(
    content_dir: Path, *, runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL
) -> list[Problem]:
    """Check every sequence folder under ``content_dir``; return all problems (empty = fine).

    A missing content directory, or one with no sequence folders, is a problem. A sub-folder is
    a sequence folder if it has a ``sequence.toml`` or any lesson ``.md`` file; hidden folders
    are ignored.
    """
    checks = _check_library(Path(content_dir), runners_lab_url)
    if isinstance(checks, Problem):
        return [checks]
    return _library_problems(checks)


def load_library(
    content_dir: Path, *, runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL
) -> dict[str, Sequence]:
    """Every sequence under ``content_dir`` by slug, or :class:`ContentError` with all problems
    of all sequences, including ``on_complete`` targets that are missing or form a cycle."""
    checks = _check_library(Path(content_dir), runners_lab_url)
    if isinstance(checks, Problem):
        raise ContentError([checks])
    problems = _library_problems(checks)
    if problems:
        raise ContentError(problems)
    return {c.folder: c.sequence for c in checks if c.sequence is not None}
