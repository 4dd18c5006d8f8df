"""A lesson file's front matter: YAML between two ``---`` lines, then the Markdown body.

Contract: these functions never raise for bad content. Each problem goes to the caller's
:data:`Report` with its 1-based line in the file, and the function returns ``None`` when there
is nothing sensible left to check. Line numbers assume the file starts with the opening fence,
which :func:`split_front_matter` insists on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import yaml

__all__ = ["FrontMatter", "Report", "SplitLesson", "load_front_matter", "split_front_matter"]

Report = Callable[[int, str], None]
"""Where problems go: called with the 1-based file line and the message."""

FrontMatter = tuple[dict[object, object], dict[str, int]]
"""The front matter mapping and the file line of each of its (string) keys."""

_FENCE = "---"
# The YAML text starts on the line after the opening fence.
_YAML_FIRST_LINE = 2


@dataclass(frozen=True)
class SplitLesson:
    """A lesson file cut at its fences. ``body`` is kept byte-for-byte, so a line number inside
    it maps straight back to the file: body line ``n`` is file line ``body_line + n - 1``."""

    front_matter: str
    closing_line: int
    body: str
    body_line: int


def split_front_matter(text: str, report: Report) -> SplitLesson | None:
    """Split ``text`` at its two fences, or report why not and return ``None``."""
    lines = text.split("\n")
    if lines[0].rstrip() != _FENCE:
        report(1, "missing front matter: the file must start with a '---' line")
        return None
    for index in range(1, len(lines)):
        if lines[index].rstrip() == _FENCE:
            return SplitLesson(
                front_matter="\n".join(lines[1:index]),
                closing_line=index + 1,
                body="\n".join(lines[index + 1 :]),
                body_line=index + 2,
            )
    report(1, "front matter is never closed: add a '---' line after it")
    return None


def load_front_matter(source: str, report: Report) -> FrontMatter | None:
    """Parse YAML front matter into its mapping and each key's file line.

    Empty front matter is an empty mapping (so the missing required fields get reported);
    invalid YAML or a non-mapping is one problem and ``None``: field checks on a half-read
    document would only add noise. A repeated key is reported, and the first one's line kept.
    """
    parsed = _parse_yaml(source, report)
    if parsed is None:
        return None
    node, data = parsed
    if node is None:
        return {}, {}
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        report(_YAML_FIRST_LINE, "front matter must be a mapping of 'key: value' lines")
        return None
    return data, _key_lines(node, report)


def _parse_yaml(source: str, report: Report) -> tuple[yaml.Node | None, object] | None:
    """The document's node (``None`` when empty) and its value, or ``None`` after a problem."""
    loader: yaml.SafeLoader | None = None
    try:
        # The constructor already reads the stream and rejects control characters.
        loader = yaml.SafeLoader(source)
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else {})
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + _YAML_FIRST_LINE if mark is not None else _YAML_FIRST_LINE
        report(line, f"front matter is not valid YAML: {err.problem or err.context}")
        return None
    except RecursionError:
        report(_YAML_FIRST_LINE, "front matter is nested too deeply")
        return None
    except yaml.YAMLError as err:  # ReaderError (a control character) carries no mark
        position = getattr(err, "position", 0)
        line = source.count("\n", 0, position) + _YAML_FIRST_LINE
        report(line, f"front matter is not valid YAML: {str(err).splitlines()[0]}")
        return None
    finally:
        if loader is not None:
            loader.dispose()


def _key_lines(node: yaml.MappingNode, report: Report) -> dict[str, int]:
    lines: dict[str, int] = {}
    for key_node, _value in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        line = key_node.start_mark.line + _YAML_FIRST_LINE
        if key_node.value in lines:
            # PyYAML silently keeps the last value; two subjects is always a mistake.
            first = lines[key_node.value]
            report(line, f"front matter key {key_node.value!r} repeats line {first}")
        else:
            lines[key_node.value] = line
    return lines
