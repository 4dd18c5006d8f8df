"""Render emails once, personalize per recipient cheaply.

:meth:`Renderer.compile` turns a Markdown body (a small Jinja template) into a
:class:`~drip.esp.base.Message`: the HTML layout filled in and its CSS inlined, a plain-text
alternative built from the same Markdown, and placeholders (``%%firstname%%``,
``%%unsubscribeurl%%``...) where per-recipient values go. That work is done once per lesson and
cached; per recipient only :func:`recipient_substitutions` runs (a few string escapes), and
:func:`drip.esp.base.personalize` or SendGrid's substitutions fill the placeholders.

Subscriber data is never rendered by Jinja or Markdown: it is HTML-escaped into the ``%%x%%``
placeholders of the HTML part and left raw in the ``%%x.t%%`` placeholders of the text part, so a
name such as ``<script>`` shows as text.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from drip.content import markdown_text
from drip.content.types import Lesson, Sequence
from drip.esp.base import Message
from drip.settings import Settings
from drip.tracking.links import rewrite_links

# Values that differ per recipient. Name -> placeholder stem; the HTML part gets "%%stem%%"
# (escaped value), the text part and subject get "%%stem.t%%" (raw value).
RECIPIENT_FIELDS = {
    "first_name": "firstname",
    "unsubscribe_url": "unsubscribeurl",
    "confirm_url": "confirmurl",
    "open_pixel_url": "openpixelurl",
}
FIRST_NAME_FALLBACK = "there"
ONE_CLICK = "List-Unsubscribe=One-Click"


def html_marker(name: str) -> str:
    return f"%%{RECIPIENT_FIELDS[name]}%%"


def text_marker(name: str) -> str:
    return f"%%{RECIPIENT_FIELDS[name]}.t%%"


@dataclass(frozen=True)
class RecipientData:
    """What a recipient contributes to a message; everything else is shared by the batch."""

    first_name: str
    unsubscribe_url: str
    confirm_url: str = ""
    open_pixel_url: str = ""


_MARKERS = tuple(
    (name, f"%%{placeholder}%%", f"%%{placeholder}.t%%")
    for name, placeholder in RECIPIENT_FIELDS.items()
)


def recipient_substitutions(data: RecipientData) -> dict[str, str]:
    """Placeholder -> value for one recipient: escaped for HTML, raw for text and subject."""
    values = {
        "first_name": data.first_name.strip() or FIRST_NAME_FALLBACK,
        "unsubscribe_url": data.unsubscribe_url,
        "confirm_url": data.confirm_url,
        "open_pixel_url": data.open_pixel_url,
    }
    subs: dict[str, str] = {}
    for name, in_html, in_text in _MARKERS:  # runs per recipient: markers built once above
        value = values[name]
        subs[in_html] = html.escape(value, quote=True) if value else value
        subs[in_text] = value
    return subs


def unsubscribe_headers(unsubscribe_url: str) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe headers (Gmail and Yahoo bulk-sender rules)."""
    return {"List-Unsubscribe": f"<{unsubscribe_url}>", "List-Unsubscribe-Post": ONE_CLICK}


class Renderer:
    """Compiles Markdown bodies into shared :class:`Message` objects, caching by message key."""

    def __init__(
        self, settings: Settings, templates_dir: Path | None = None, *, tracking: bool = False
    ) -> None:
        self.settings = settings
        folder = (templates_dir or settings.templates_dir) / "email"
        self._folder = folder
        self._layouts = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(["html"], default_for_string=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        # Lesson bodies are content, not code: a sandbox keeps a template from reaching Python.
        self._bodies = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
        self._cache: dict[str, Message] = {}
        # Tracking (drip.tracking.links) only where asked: the runtime asks, previews don't.
        self.open_tracking = tracking and settings.track_opens
        self.click_tracking = tracking and settings.track_clicks

    def shared_context(self) -> dict[str, Any]:
        s = self.settings
        return {
            "course_name": "Glute Accelerator Crash Course",
            "runners_lab_url": s.runners_lab_url,
            "from_name": s.from_name,
        }

    def lesson(self, sequence: Sequence, lesson: Lesson) -> Message:
        """The compiled message for one lesson (cached for the life of this renderer)."""
        key = lesson.key
        if key not in self._cache:
            template = "lesson" if sequence.kind == "course" else "upsell"
            context: dict[str, Any] = {
                "lesson_number": lesson.position,
                "lesson_count": sequence.length,
            }
            if sequence.kind == "course":
                context["course_name"] = sequence.name
            self._cache[key] = self.compile(
                message_key=key,
                template=template,
                subject=lesson.subject,
                preheader=lesson.preheader,
                body_md=lesson.body,
                category=sequence.category,
                brand=sequence.name,
                footer_reason=f"You get this because you signed up for the {sequence.name}.",
                extra=context,
            )
        return self._cache[key]

    def confirmation(self) -> Message:
        """The double opt-in email; its link is the per-recipient ``confirm_url``."""
        if "confirm" not in self._cache:
            body = (self._folder / "confirm.md").read_text(encoding="utf-8")
            self._cache["confirm"] = self.compile(
                message_key="confirm",
                template="confirm",
                subject="Please confirm your subscription",
                preheader="One click and your first lesson of the crash course is on its way.",
                body_md=body,
                category="confirm",
                brand="Glute Accelerator Crash Course",
                footer_reason="You are getting this because this address was entered on our form.",
                extra={"confirm_days": self.settings.confirm_max_age_days},
                tracked=False,  # transactional: no pixel, and its one link is per recipient
            )
        return self._cache["confirm"]

    def compile(
        self,
        *,
        message_key: str,
        template: str,
        subject: str,
        preheader: str,
        body_md: str,
        category: str,
        brand: str,
        footer_reason: str,
        extra: Mapping[str, Any] | None = None,
        tracked: bool = True,
    ) -> Message:
        """Render ``body_md`` into the ``template`` layout (``<template>.html`` and ``.txt``).

        With tracking on (and ``tracked``), HTML links become ``%%linkN%%`` placeholders listed
        in :attr:`Message.links` and the open pixel is added; see :mod:`drip.tracking.links`.
        """
        pixel = tracked and self.open_tracking
        shared = {**self.shared_context(), **(extra or {})}
        html_vars = {name: html_marker(name) for name in RECIPIENT_FIELDS}
        text_vars = {name: text_marker(name) for name in RECIPIENT_FIELDS}
        if not pixel:
            html_vars["open_pixel_url"] = ""  # no pixel at all, not an empty <img>
        body_html = markdown_text.to_html(self._body(body_md, {**shared, **html_vars}))
        body_text = markdown_text.to_text(self._body(body_md, {**shared, **text_vars}))
        subject_text = self._body(subject, {**shared, **text_vars}).strip()
        layout = {
            **shared,
            "subject": subject_text,
            "preheader": preheader,
            "brand": brand,
            "footer_reason": footer_reason,
            "from_name": self.settings.from_name,
            "postal_address": self.settings.postal_address,
        }
        # The HTML layout shows the subject too (<title>): it gets the escaped placeholders.
        subject_html = self._body(subject, {**shared, **html_vars}).strip()
        page = self._layouts.get_template(f"{template}.html").render(
            **{**layout, "subject": subject_html}, **html_vars, body_html=Markup(body_html)
        )
        text = self._layouts.get_template(f"{template}.txt").render(
            **layout, **text_vars, body_text=body_text
        )
        page = self._inliner.inline(page)
        links: tuple[str, ...] = ()
        if tracked and self.click_tracking:
            public = self.settings.public_url
            page, links = rewrite_links(page, never=(f"{public}/unsubscribe", f"{public}/t/"))
        return Message(
            message_key=message_key,
            subject=subject_text,
            html=page,
            text=text,
            from_email=self.settings.from_email,
            from_name=self.settings.from_name,
            reply_to=self.settings.reply_to,
            category=category,
            links=links,
            open_tracking=pixel,
        )

    def _body(self, source: str, context: Mapping[str, Any]) -> str:
        return self._bodies.from_string(source).render(**context)
