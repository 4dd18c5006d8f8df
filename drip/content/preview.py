"""Lesson previews: ``drip lessons preview`` writes every lesson as .html, .txt and .eml with an
index page; the dashboard shows one lesson at a time (:func:`sample_email`)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from drip.content.render import (
    RecipientData,
    Renderer,
    recipient_substitutions,
    unsubscribe_headers,
)
from drip.content.types import Lesson, Sequence
from drip.esp.base import Recipient, personalize
from drip.esp.mime import build_mime

SAMPLE_NAME = "Sam"


@dataclass(frozen=True)
class SampleEmail:
    """A lesson as the sample reader gets it: subject, HTML and text, personalized."""

    subject: str
    html: str
    text: str


def sample_recipient(public_url: str) -> Recipient:
    """The made-up reader of previews (Sam, with an unsubscribe link that names no one)."""
    unsubscribe = f"{public_url}/unsubscribe/PREVIEW"
    data = RecipientData(first_name=SAMPLE_NAME, unsubscribe_url=unsubscribe)
    return Recipient(
        delivery_id=0,
        email="sam@example.com",
        name=SAMPLE_NAME,
        substitutions=recipient_substitutions(data),
        headers=unsubscribe_headers(unsubscribe),
    )


def sample_email(
    renderer: Renderer, sequence: Sequence, lesson: Lesson, *, public_url: str
) -> SampleEmail:
    """One lesson for the sample reader (the dashboard's preview). Give a renderer built
    without tracking, so the preview has no pixel and no rewritten links."""
    message = renderer.lesson(sequence, lesson)
    subs = sample_recipient(public_url).substitutions
    return SampleEmail(
        subject=personalize(message.subject, subs),
        html=personalize(message.html, subs),
        text=personalize(message.text, subs),
    )


def write_previews(
    renderer: Renderer, library: dict[str, Sequence], out: Path, *, public_url: str
) -> list[Path]:
    """Write the previews under ``out``; returns the files written (index.html last)."""
    out.mkdir(parents=True, exist_ok=True)
    recipient = sample_recipient(public_url)
    written: list[Path] = []
    rows: list[str] = []
    for sequence in library.values():
        for lesson in sequence.lessons:
            message = renderer.lesson(sequence, lesson)
            stem = f"{sequence.slug}-{lesson.position:02d}"
            subs = recipient.substitutions
            files = {
                f"{stem}.html": personalize(message.html, subs),
                f"{stem}.txt": personalize(message.text, subs),
                f"{stem}.eml": build_mime(
                    message, recipient, date=datetime.now(UTC), message_id_domain="preview.invalid"
                ).as_string(),
            }
            for name, body in files.items():
                path = out / name
                path.write_text(body, encoding="utf-8")
                written.append(path)
            subject = html.escape(personalize(message.subject, subs))
            rows.append(
                f"<tr><td>{html.escape(sequence.name)}</td><td>{lesson.position}</td>"
                f'<td><a href="{stem}.html">{subject}</a></td>'
                f'<td><a href="{stem}.txt">text</a> · <a href="{stem}.eml">eml</a></td></tr>'
            )
    index = out / "index.html"
    index.write_text(
        "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Lesson previews</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}td,th{padding:4px 10px;"
        "text-align:left}</style><h1>Lesson previews</h1><table><tr><th>Sequence</th>"
        "<th>#</th><th>Subject</th><th>Other forms</th></tr>" + "".join(rows) + "</table></html>",
        encoding="utf-8",
    )
    written.append(index)
    return written
