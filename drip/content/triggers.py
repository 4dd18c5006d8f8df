"""What starts and what ends a sequence: the ``[[triggers]]`` and ``[[exits]]`` of sequence.toml.

```toml
[[triggers]]
on = "tag_added"   # form, tag_added, tag_removed, purchased, completed, clicked, manual
tag = "5k-plan"    # the kind's one value: form, tag, product, sequence, link (none for manual)
                   # (a link matches human clicks on that URL, whatever its query string)

[[exits]]
on = "purchased"   # purchased, tag_added, tag_removed, unsubscribed
product = "runners-lab"
```

Contract: :func:`check_rules` never raises for bad content. It appends every problem of the two
lists to the caller's list, each on the line of its ``[[triggers]]``/``[[exits]]`` header, and
returns the rules that are valid on their own. Whether a named sequence or form exists, and
whether ``completed`` triggers form a cycle, is a library-wide check (drip.content.checks).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from drip.errors import Problem

__all__ = [
    "EXIT_KINDS",
    "TAG_RE",
    "TRIGGER_KINDS",
    "Rule",
    "check_rules",
    "link_key",
]

# The one value each kind names, by its key in the table. ``manual`` names nothing.
TRIGGER_KINDS: dict[str, str | None] = {
    "form": "form",
    "tag_added": "tag",
    "tag_removed": "tag",
    "purchased": "product",
    "completed": "sequence",
    "clicked": "link",
    "manual": None,
}
EXIT_KINDS: dict[str, str | None] = {
    "purchased": "product",
    "tag_added": "tag",
    "tag_removed": "tag",
    "unsubscribed": "topic",
}
TOPICS = ("course", "newsletter")

# Tags, forms, products and sequence slugs: lowercase words joined by '-' (tags also allow
# ':' and '_', as Kit's and Kajabi's exports use them).
TAG_RE = re.compile(r"[a-z0-9][a-z0-9_:-]{0,63}")
_SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_VALUE_RULES: dict[str, tuple[Callable[[str], bool], str]] = {
    "form": (lambda v: bool(_SLUG_RE.fullmatch(v)), "a form slug"),
    "sequence": (lambda v: bool(_SLUG_RE.fullmatch(v)), "a sequence slug"),
    "product": (lambda v: bool(TAG_RE.fullmatch(v)), "a product id like 'runners-lab'"),
    "tag": (lambda v: bool(TAG_RE.fullmatch(v)), "a tag (lowercase, at most 64 characters)"),
    "link": (lambda v: v.startswith("https://") and len(v) <= 2000, "an https:// URL"),
    "topic": (lambda v: v in TOPICS, f"one of {', '.join(TOPICS)}"),
}


@dataclass(frozen=True)
class Rule:
    """One trigger or exit: its kind (``on``) and the value it names (``""`` for ``manual``).

    ``line`` is where it is written, for library-wide problems; it takes no part in equality.
    """

    on: str
    value: str
    line: int = field(default=1, compare=False)

    @property
    def label(self) -> str:
        """``"tag_added:5k-plan"``: how an enrollment records what started it."""
        return f"{self.on}:{self.value}" if self.value else self.on


def link_key(url: str) -> str:
    """What a ``clicked`` trigger compares: the URL without its query and fragment, so that a
    click on ``https://x.test/plan?utm_source=drip`` counts for ``link = "https://x.test/plan"``."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, "", ""))


def check_rules(
    data: Mapping[str, Any], text: str, where: str, problems: list[Problem]
) -> tuple[tuple[Rule, ...], tuple[Rule, ...]]:
    """The valid ``(triggers, exits)`` of a parsed sequence.toml; problems appended."""
    triggers = _check_list(data, "triggers", TRIGGER_KINDS, text, where, problems)
    exits = _check_list(data, "exits", EXIT_KINDS, text, where, problems)
    return triggers, exits


def _check_list(
    data: Mapping[str, Any],
    key: str,
    kinds: Mapping[str, str | None],
    text: str,
    where: str,
    problems: list[Problem],
) -> tuple[Rule, ...]:
    if key not in data:
        return ()
    entries = data[key]
    lines = _header_lines(text, key)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append(Problem(where, lines[0] if lines else 1, f"{key} must be [[{key}]] tables"))
        return ()
    rules: list[Rule] = []
    seen: set[Rule] = set()
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else 1
        message, rule = _check_entry(entry, key, kinds, line)
        if message is not None:
            problems.append(Problem(where, line, message))
        elif rule is not None and rule in seen:
            problems.append(Problem(where, line, f"{key[:-1]} {rule.label!r} is listed twice"))
        elif rule is not None:
            seen.add(rule)
            rules.append(rule)
    return tuple(rules)


def _check_entry(
    entry: Mapping[str, Any], key: str, kinds: Mapping[str, str | None], line: int
) -> tuple[str | None, Rule | None]:
    """``(problem, None)`` or ``(None, rule)`` for one table of the list."""
    kind = entry.get("on")
    what = key[:-1]  # "trigger", "exit"
    if not isinstance(kind, str) or kind not in kinds:
        known = ", ".join(kinds)
        return f"{what} on = {kind!r} is not a kind of {what} (known: {known})", None
    value_key = kinds[kind]
    allowed = {"on", value_key} if value_key else {"on"}
    if extra := sorted(set(entry) - allowed):
        return f"{what} on = {kind!r} takes no key {extra[0]!r}", None
    if value_key is None:
        return None, Rule(kind, "", line)
    value = entry.get(value_key)
    if value_key == "link" and isinstance(value, str):
        value = link_key(value)
    if value is None:
        return f"{what} on = {kind!r} needs {value_key} = ...", None
    valid, wanted = _VALUE_RULES[value_key]
    if not isinstance(value, str) or not valid(value):
        return f"{what} {value_key} must be {wanted}, not {value!r}", None
    return None, Rule(kind, value, line)


def _header_lines(text: str, key: str) -> list[int]:
    """Lines of the ``[[key]]`` headers in order (tomllib keeps no positions)."""
    header = re.compile(rf"""\s*\[\[\s*(?:{key}|"{key}"|'{key}')\s*\]\]""")
    return [n for n, line in enumerate(text.split("\n"), start=1) if header.match(line)]
