"""The rules a lesson's body and subject obey, which broadcasts share.

A body is a Jinja template that uses only :data:`~drip.content.types.TEMPLATE_VARIABLES` and no
statement tags; rendered with :func:`~drip.content.types.sample_context`, it is Markdown with no
raw HTML, no images and only absolute https (or mailto) links.

Contract: these functions never raise for bad content. They return ``(line, message)`` pairs,
``line`` 1-based within the text they were given; the caller shifts it to a file line.
:func:`check_source` runs every rule and returns every problem at once.
"""

from __future__ import annotations

import difflib
import traceback
import urllib.parse
from collections.abc import Iterator

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, nodes
from jinja2 import meta as jinja_meta
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt
from markdown_it.token import Token

from drip.content.types import TEMPLATE_VARIABLES, sample_context

__all__ = ["Found", "check_markdown", "check_source", "check_template", "stand_in_text"]

Found = list[tuple[int, str]]
"""Problems as ``(line, message)``, ``line`` 1-based within the checked text."""

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
# What an expression that can't be evaluated becomes in stand_in_text (see there for why a URL).
STAND_IN = "https://template.invalid/"
_OPENERS = {"{{": "}}", "{%": "%}", "{#": "#}"}


def check_source(source: str, runners_lab_url: str, *, markdown: bool = True) -> Found:
    """Every problem of one Jinja source at once: the template problems first, then (with
    ``markdown``) the Markdown rules of :func:`check_markdown`.

    The Markdown rules run on the rendered text when the template renders, and otherwise on
    :func:`stand_in_text`: a template problem (a typo in a name, a syntax error) must not hide
    a raw ``<div>`` or an ``http://`` link further down until the next run.
    """
    rendered, found = check_template(source, runners_lab_url)
    if markdown:
        text = rendered if rendered is not None else stand_in_text(source, runners_lab_url)
        found += check_markdown(text)
    return found


def check_template(source: str, runners_lab_url: str) -> tuple[str | None, Found]:
    """Check one Jinja source (a body or a subject) the way lessons are rendered.

    Returns the text rendered with :func:`sample_context` (``None`` if it can't be trusted) and
    the problems found.
    """
    try:
        ast = _JINJA.parse(source)
        template = _JINJA.from_string(ast)  # compiles: unknown filters/tests fail here
    except TemplateSyntaxError as err:
        return None, [(err.lineno or 1, f"template syntax error: {err.message}")]
    except RecursionError:
        return None, [(1, "template expression is nested too deeply")]
    found = _statement_tags(source) + _unknown_variables(ast)
    if found:
        return None, found  # rendering would only repeat these problems as errors
    return _render(template, runners_lab_url)


def stand_in_text(source: str, runners_lab_url: str) -> str:
    """``source`` as the Markdown rules can read it when Jinja can't render it.

    A source that does not render is not Markdown yet, so this is the honest approximation:
    each ``{{ name }}`` of :data:`TEMPLATE_VARIABLES` becomes its :func:`sample_context` value
    (as when rendering), any other expression becomes :data:`STAND_IN`, and statement tags and
    comments become nothing; every newline is kept, so a line of the result is the same line
    of the source. The stand-in is an https URL because an expression that fails usually sits
    in a link (``[the lab]({{ runners_lab_ur }})``), and its problem is already reported: the
    link must not be reported a second time. In text, a bare URL is plain text to the rules.

    The constructs are found by their delimiters, not by Jinja (which stops at a syntax error).
    An opener with no closer before the next opener (``Hi {{ first_name,`` then more text)
    stays as it is, so a forgotten ``}}`` does not hide the lines after it. Linear in the length
    of ``source``.
    """
    values = sample_context(runners_lab_url)
    parts: list[str] = []
    closers: dict[str, int] = {}  # each closer's first index after the last search; -1: none
    position = 0
    start = _next_opener(source, 0)
    while start >= 0:
        opener = source[start : start + 2]
        end = _closer_after(source, _OPENERS[opener], start + 2, closers)
        following = _next_opener(source, start + 2)
        if end < 0 or 0 <= following < end:
            start = following  # never closed: left as text
            continue
        inside = source[start + 2 : end]
        parts.append(source[position:start])
        if opener == "{{":
            name = inside.strip(" \t\r\n+-")  # whitespace control: {{- name -}}
            parts.append(str(values[name]) if name in values else STAND_IN)
        parts.append("\n" * inside.count("\n"))
        position = end + 2
        start = _next_opener(source, position)
    parts.append(source[position:])
    return "".join(parts)


def _closer_after(source: str, closer: str, position: int, found: dict[str, int]) -> int:
    """The index of the first ``closer`` at or after ``position``, or -1; ``found`` remembers
    earlier answers, so that many openers before one closer don't search the text again."""
    known = found.get(closer)
    if known is None or 0 <= known < position:
        known = found[closer] = source.find(closer, position)
    return known


def _next_opener(source: str, position: int) -> int:
    """The index of the next ``{{``, ``{%`` or ``{#`` at or after ``position``, or -1."""
    while (start := source.find("{", position)) >= 0:
        if source[start : start + 2] in _OPENERS:
            return start
        position = start + 1
    return -1


def _statement_tags(source: str) -> Found:
    """Every ``{% tag %}`` and ``{% raw %}``, once per opening tag."""
    found: Found = []
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
    return found


def _unknown_variables(ast: nodes.Template) -> Found:
    """Names outside TEMPLATE_VARIABLES, each on its first line, with a spelling hint."""
    unknown = jinja_meta.find_undeclared_variables(ast) - TEMPLATE_VARIABLES
    if not unknown:
        return []
    first_line: dict[str, int] = {}
    for name_node in ast.find_all(nodes.Name):
        if name_node.name in unknown:
            first_line.setdefault(name_node.name, name_node.lineno)
    known = ", ".join(sorted(TEMPLATE_VARIABLES))
    found: Found = []
    for name in sorted(unknown, key=lambda n: (first_line.get(n, 1), n)):
        close = difflib.get_close_matches(name, TEMPLATE_VARIABLES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        found.append(
            (first_line.get(name, 1), f"unknown template variable {name!r} ({hint}known: {known})")
        )
    return found


def _render(template: Template, runners_lab_url: str) -> tuple[str | None, Found]:
    try:
        return template.render(sample_context(runners_lab_url)), []
    except Exception as err:  # any failure of author content is a problem, never a crash
        # Jinja rewrites tracebacks so template frames carry the template's own line numbers.
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == "<template>"]
        line = (frames[-1].lineno if frames else None) or 1
        return None, [(line, f"rendering failed: {type(err).__name__}: {err}")]


def check_markdown(rendered: str) -> Found:
    """Raw HTML, images and non-https links in rendered Markdown; raw HTML once per line."""
    found: Found = []
    html_lines: set[int] = set()
    for index, token in _inline_tokens(_MARKDOWN.parse(rendered)):
        line = index + 1
        if token.type in ("html_block", "html_inline"):
            if line in html_lines:
                continue  # one report per line: "<b>x</b>" is one mistake, not two
            html_lines.add(line)
            snippet = token.content.strip().split("\n")[0][:40]
            found.append((line, f"raw HTML {snippet!r} is not allowed: write Markdown"))
        elif token.type == "image":
            src = str(token.attrGet("src") or "")
            found.append((line, f"image {src!r} is not allowed: lessons are text only"))
        elif token.type == "link_open":
            href = str(token.attrGet("href") or "")
            if not _is_https(href):
                found.append((line, f"link {href!r} must be an absolute https URL"))
    return found


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


def _is_https(href: str) -> bool:
    """An absolute https URL with a host, or a non-empty mailto."""
    if href.startswith("mailto:"):
        return len(href) > len("mailto:")
    try:
        parts = urllib.parse.urlsplit(href)
        return parts.scheme == "https" and bool(parts.hostname)
    except ValueError:  # e.g. a malformed IPv6 host
        return False
