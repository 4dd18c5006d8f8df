"""The course passes its checks: every sequence under ``DRIP_CONTENT_DIR`` loads, and the one a
confirmed subscriber enters (``DRIP_COURSE_SEQUENCE``) is among them."""

from __future__ import annotations

from drip.content.loading import survey_content
from drip.reports.doctor.findings import Finding, fail, ok
from drip.reports.doctor.runner import Context


def check_content(context: Context) -> Finding:
    settings = context.settings
    folder = settings.content_dir
    survey = survey_content(settings)
    if survey.problems:
        problems = [str(problem) for problem in survey.problems]
        noun = "problem" if len(problems) == 1 else "problems"
        return fail(
            f"DRIP_CONTENT_DIR: {len(problems)} {noun} in {folder}\n" + "\n".join(problems),
            "fix each file at the line shown, then run `drip lessons check`; workers refuse "
            "to start on broken content",
        )
    if settings.course_sequence not in survey.sequences:
        found = ", ".join(sorted(survey.sequences)) or "none"
        return fail(
            f"DRIP_COURSE_SEQUENCE: no sequence {settings.course_sequence!r} in {folder} "
            f"(found: {found})",
            "set DRIP_COURSE_SEQUENCE to the slug of the course's folder",
        )
    emails = sum(sequence.length for sequence in survey.sequences.values())
    return ok(
        f"{len(survey.sequences)} sequences, {emails} emails in {folder}; "
        f"the course is {settings.course_sequence!r}"
    )
