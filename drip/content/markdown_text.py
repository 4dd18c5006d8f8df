"""Markdown to HTML and to plain text, from one markdown-it token stream.

The plain-text part of every email is built from the same tokens as the HTML, so the two never
drift apart, and links stay usable in text: ``[the lab](https://x)`` becomes ``the lab
(https://x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.token import Token

# Raw HTML stays off: lesson and broadcast authors write Markdown, and a stray <script> or a
# broken table must not reach an inbox.
_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def parse(source: str) -> list[Token]:
    return _md.parse(source)


def to_html(source: str) -> str:
    return str(_md.render(source))


def to_text(source: str, width_hint: int = 72) -> str:
    """Plain text of a Markdown document; links become ``text (url)``.

    Headings are underlined (at most ``width_hint`` wide), list items keep their ``-`` or
    number, blockquotes their ``> ``; blank lines never run two deep.
    """
    text = _PlainText(width_hint)
    for token in parse(source):
        handle = _HANDLERS.get(token.type)
        if handle is not None:
            handle(text, token)
    return text.result()


@dataclass
class _PlainText:
    """The plain text built so far, one entry per output line, and the open blocks."""

    width_hint: int
    lines: list[str] = field(default_factory=list)
    # Per open list, innermost last: the next item's number, or None for a bullet list.
    lists: list[int | None] = field(default_factory=list)
    quote_depth: int = 0  # open blockquotes: their lines are prefixed with "> "

    def result(self) -> str:
        text = "\n".join(self.lines)
        while "\n\n\n" in text:
            text = text.replace("\n\n\n", "\n\n")
        return text.strip() + "\n"

    def heading_open(self, token: Token) -> None:
        self.lines.append("")

    def heading_close(self, token: Token) -> None:
        line = self.lines.pop() if self.lines else ""
        underline = "=" if token.tag == "h1" else "-"
        self.lines.extend([line, underline * min(max(len(line), 3), self.width_hint), ""])

    def bullet_list_open(self, token: Token) -> None:
        self.lists.append(None)

    def ordered_list_open(self, token: Token) -> None:
        start = token.attrGet("start")
        self.lists.append(int(start) if start is not None else 1)

    def list_close(self, token: Token) -> None:
        self.lists.pop()
        if not self.lists:
            self.lines.append("")

    def list_item_open(self, token: Token) -> None:
        marker = "-"
        number = self.lists[-1] if self.lists else None
        if number is not None:
            marker = f"{number}."
            self.lists[-1] = number + 1
        indent = "  " * (len(self.lists) - 1)
        self.lines.append(f"{indent}{marker} ")

    def paragraph_close(self, token: Token) -> None:
        if not self.lists:  # list items are separated by their markers, not blank lines
            self.lines.append("")

    def inline(self, token: Token) -> None:
        text = _inline_text(token.children or [])
        if self.quote_depth:
            text = "\n".join("> " * self.quote_depth + line for line in text.split("\n"))
        last = self.lines[-1] if self.lines else ""
        if self.lists and last.endswith(" ") and last.strip():
            self.lines[-1] += text  # the list marker waits for its item's text
        else:
            self.lines.append(text)

    def hr(self, token: Token) -> None:
        self.lines.extend(["-" * 20, ""])

    def code(self, token: Token) -> None:
        self.lines.extend([token.content.rstrip("\n"), ""])

    def blockquote_open(self, token: Token) -> None:
        self.quote_depth += 1

    def blockquote_close(self, token: Token) -> None:
        self.quote_depth -= 1


# Block token types and what they add to the text; the rest (paragraph_open...) add nothing.
_HANDLERS: dict[str, Callable[[_PlainText, Token], None]] = {
    "heading_open": _PlainText.heading_open,
    "heading_close": _PlainText.heading_close,
    "bullet_list_open": _PlainText.bullet_list_open,
    "ordered_list_open": _PlainText.ordered_list_open,
    "bullet_list_close": _PlainText.list_close,
    "ordered_list_close": _PlainText.list_close,
    "list_item_open": _PlainText.list_item_open,
    "paragraph_close": _PlainText.paragraph_close,
    "inline": _PlainText.inline,
    "hr": _PlainText.hr,
    "fence": _PlainText.code,
    "code_block": _PlainText.code,
    "blockquote_open": _PlainText.blockquote_open,
    "blockquote_close": _PlainText.blockquote_close,
}


def _inline_text(children: Sequence[Token]) -> str:
    parts: list[str] = []
    href_stack: list[tuple[str, int]] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "link_open":
            href_stack.append((str(child.attrGet("href") or ""), len(parts)))
        elif child.type == "link_close" and href_stack:
            href, start = href_stack.pop()
            label = "".join(parts[start:])
            if href and href not in (label, f"mailto:{label}"):
                parts.append(f" ({href})")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)
