"""Where content lives on disk and how its files are read.

Layout: ``<content_dir>/<slug>/sequence.toml`` and ``<content_dir>/<slug>/NN-some-slug.md``.
Every reader of author files goes through :func:`read_text`, so line numbers in problems agree
whichever checker reports them.
"""

from __future__ import annotations

import re
from pathlib import Path

from drip.errors import Problem

SEQUENCE_FILE = "sequence.toml"

LESSON_FILE_RE = re.compile(r"(\d{2,})-[a-z0-9]+(?:-[a-z0-9]+)*")
"""A lesson file's stem: the position (two digits or more), then lowercase words."""


def read_text(path: Path, problems: list[Problem]) -> str | None:
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


def lesson_files(directory: Path) -> list[Path]:
    """Candidate lesson files: ``*.md`` except README.md and hidden/editor files, by name."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix == ".md"
        and p.is_file()
        and p.name.lower() != "readme.md"
        and not p.name.startswith((".", "#", "~"))
    )


def is_sequence_folder(path: Path) -> bool:
    """A visible folder with a ``sequence.toml`` or any lesson ``.md`` file."""
    if not path.is_dir() or path.name.startswith("."):
        return False
    # A folder of lessons whose sequence.toml is misnamed must not be skipped silently.
    return (path / SEQUENCE_FILE).is_file() or any(
        p.suffix == ".md" and p.name.lower() != "readme.md" for p in path.iterdir()
    )
