"""Load sequences for the running system: fully validated, or not at all.

Contract: the ``load_*`` functions return objects built from content with no problems, or raise
:class:`~drip.errors.ContentError` carrying every problem :mod:`drip.content.checks` found.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from drip.content.checks import check_sequence, survey_library
from drip.content.forms import Form, check_forms, sequence_slugs
from drip.content.types import DEFAULT_FORM, DEFAULT_RUNNERS_LAB_URL, Sequence
from drip.errors import ContentError, Problem
from drip.settings import Settings

__all__ = ["ContentSurvey", "load_content", "load_library", "load_sequence", "survey_content"]


@dataclass(frozen=True)
class ContentSurvey:
    """Everything the content directory holds: the valid forms and sequences, and the problems
    of both. Only when ``problems`` is empty are ``forms`` and ``sequences`` complete."""

    forms: dict[str, Form]
    sequences: dict[str, Sequence]
    problems: list[Problem]


def survey_content(settings: Settings) -> ContentSurvey:
    """Check the forms (``DRIP_FORMS_DIR``) and the sequences (``DRIP_CONTENT_DIR``) together:
    the library knowing every form that exists (``form`` triggers), the forms every sequence
    folder (their ``sequence``). What every command, the web app and the workers read."""
    forms = check_forms(
        settings.forms_folder,
        sequences=sequence_slugs(settings.content_dir),
        runners_lab_url=settings.runners_lab_url,
        required=settings.forms_dir is not None,
    )
    library = survey_library(
        settings.content_dir, runners_lab_url=settings.runners_lab_url, forms=forms.slugs
    )
    return ContentSurvey(forms.forms, library.sequences, [*forms.problems, *library.problems])


def load_content(settings: Settings) -> tuple[dict[str, Form], dict[str, Sequence]]:
    """The forms and the sequences, or :class:`ContentError` with every problem of both."""
    survey = survey_content(settings)
    if survey.problems:
        raise ContentError(survey.problems)
    return survey.forms, survey.sequences


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
