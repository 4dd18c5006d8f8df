"""Markdown to HTML and to plain text, from one markdown-it token stream.

The plain-text part of every email is built from the same tokens as the HTML, so the two never
drift apart, and links stay usable in text: ``[the lab](https://x)`` becomes ``the lab
(https://x)``.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """Plain text of a Markdown document; links become ``text (url)``."""
    out: list[str] = []
    list_stack: list[list[int]] = []  # per open list: [next number] or [-1] for bullets
    quote_depth = 0  # open blockquotes: their lines are prefixed with "> "
    for token in parse(source):
        kind = token.type
        if kind == "heading_open":
            out.append("")
        elif kind == "heading_close":
            line = out.pop() if out else ""
            out.append(line)
            underline = "=" if token.tag == "h1" else "-"
            out.append(underline * min(max(len(line), 3), width_hint))
            out.append("")
        elif kind == "bullet_list_open":
            list_stack.append([-1])
        elif kind == "ordered_list_open":
            start = token.attrGet("start")
            list_stack.append([int(start) if start is not None else 1])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            list_stack.pop()
            if not list_stack:
                out.append("")
        elif kind == "list_item_open":
            marker = "-"
            if list_stack and list_stack[-1][0] >= 0:
                marker = f"{list_stack[-1][0]}."
                list_stack[-1][0] += 1
            indent = "  " * (len(list_stack) - 1)
            out.append(f"{indent}{marker} ")
        elif kind == "paragraph_close" and not list_stack:
            out.append("")
        elif kind == "inline":
            text = _inline_text(token.children or [])
            if quote_depth:
                text = "\n".join("> " * quote_depth + line for line in text.split("\n"))
            if out and out[-1].endswith(" ") and out[-1].strip() and list_stack:
                out[-1] += text  # the list marker waits for its item's text
            else:
                out.append(text)
        elif kind == "hr":
            out.extend(["-" * 20, ""])
        elif kind in ("fence", "code_block"):
            out.extend([token.content.rstrip("\n"), ""])
        elif kind == "blockquote_open":
            quote_depth += 1
        elif kind == "blockquote_close":
            quote_depth -= 1
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"


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
