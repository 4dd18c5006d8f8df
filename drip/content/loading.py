"""Load sequences for the running system: fully validated, or not at all.

Contract: the ``load_*`` functions return objects built from content with no problems, or raise
:class:`~drip.errors.ContentError` carrying every problem :mod:`drip.content.checks` found.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from drip.content.checks import check_sequence, survey_library
from drip.content.types import DEFAULT_FORM, DEFAULT_RUNNERS_LAB_URL, Sequence
from drip.errors import ContentError

__all__ = ["load_library", "load_sequence"]


def load_sequence(directory: Path, *, runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL) -> Sequence:
    """Like :func:`~drip.content.checks.check_sequence`, but raise :class:`ContentError` if
    there is any problem."""
    sequence, problems = check_sequence(directory, runners_lab_url=runners_lab_url)
    if problems or sequence is None:
        raise ContentError(problems)
    return sequence


def load_library(
    content_dir: Path,
    *,
    runners_lab_url: str = DEFAULT_RUNNERS_LAB_URL,
    forms: Collection[str] = (DEFAULT_FORM,),
) -> dict[str, Sequence]:
    """Every sequence under ``content_dir`` by slug, or :class:`ContentError` with all problems
    of all sequences, including hand-overs (``on_complete``, ``completed`` triggers) that name no
    sequence or form a cycle, and ``form`` triggers naming none of ``forms``."""
    library = survey_library(content_dir, runners_lab_url=runners_lab_url, forms=forms)
    if library.problems:
        raise ContentError(library.problems)
    return library.sequences
