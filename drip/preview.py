"""``drip lessons preview``: every lesson as .html, .txt and .eml, with an index page."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from drip.content import Sequence
from drip.esp.base import Recipient, personalize
from drip.esp.mime import build_mime
from drip.render import RecipientData, Renderer, recipient_substitutions, unsubscribe_headers

SAMPLE_NAME = "Sam"


def write_previews(
    renderer: Renderer, library: dict[str, Sequence], out: Path, *, public_url: str
) -> list[Path]:
    """Write the previews under ``out``; returns the files written (index.html last)."""
    out.mkdir(parents=True, exist_ok=True)
    unsubscribe = f"{public_url}/unsubscribe/PREVIEW"
    data = RecipientData(first_name=SAMPLE_NAME, unsubscribe_url=unsubscribe)
    recipient = Recipient(
        delivery_id=0,
        email="sam@example.com",
        name=SAMPLE_NAME,
        substitutions=recipient_substitutions(data),
        headers=unsubscribe_headers(unsubscribe),
    )
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
