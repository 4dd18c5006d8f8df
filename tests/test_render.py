"""Rendering: lessons of the real content compiled once, personalized per recipient, as MIME.

What a recipient finally sees is ``personalize(message.html/text, recipient_substitutions(...))``
(or SendGrid doing the same substitution), so most tests look at that, not at the placeholders.
"""

from __future__ import annotations

import email
import html
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import parseaddr

import pytest

from drip.content.loading import load_library
from drip.content.markdown_text import to_text
from drip.content.render import (
    ONE_CLICK,
    RecipientData,
    Renderer,
    recipient_substitutions,
    unsubscribe_headers,
)
from drip.content.types import Lesson, Sequence
from drip.esp.base import Message, Recipient, personalize
from drip.esp.mime import build_mime
from drip.settings import Settings

UNSUBSCRIBE = "https://drip.test/u/abc123?sig=x-y_z&k=1"
LAB_URL = "https://lab.test/join"  # conftest's runners_lab_url


@pytest.fixture
def library(settings: Settings) -> dict[str, Sequence]:
    return load_library(settings.content_dir, runners_lab_url=settings.runners_lab_url)


@pytest.fixture
def renderer(settings: Settings) -> Renderer:
    return Renderer(settings)


def _all_lessons(settings: Settings) -> list[tuple[str, int]]:
    library = load_library(settings.content_dir, runners_lab_url=settings.runners_lab_url)
    return [(slug, lesson.position) for slug, seq in library.items() for lesson in seq.lessons]


# Every email of the real content: 7 lessons and 3 upsell emails.
ALL = (
    [("glute-accelerator", n) for n in range(1, 8)]
    + [("mid-stance-checklist", n) for n in (1, 2)]
    + [("runners-lab-upsell", n) for n in (1, 2, 3)]
    + [("runners-lab-welcome", n) for n in (1, 2)]
)


def _lesson(library: dict[str, Sequence], slug: str, position: int) -> tuple[Sequence, Lesson]:
    sequence = library[slug]
    lesson = sequence.lesson_at(position)
    assert lesson is not None
    return sequence, lesson


def _subs(first_name: str = "Ana", **extra: str) -> dict[str, str]:
    return recipient_substitutions(
        RecipientData(first_name=first_name, unsubscribe_url=UNSUBSCRIBE, **extra)
    )


def _content_cell(page: str) -> str:
    match = re.search(r'<td class="content"[^>]*>(.*?)</td>', page, re.S)
    assert match, "no content cell"
    return match.group(1)


def _tags(fragment: str, *names: str) -> list[str]:
    return re.findall(rf"<(?:{'|'.join(names)})\b[^>]*>", fragment)


def test_the_real_content_is_fourteen_emails(settings: Settings) -> None:
    assert sorted(_all_lessons(settings)) == ALL


# --------------------------------------------------------------------------- HTML layout


@pytest.mark.parametrize(("slug", "position"), ALL)
def test_css_is_inlined_on_the_main_elements(
    library: dict[str, Sequence], renderer: Renderer, slug: str, position: int
) -> None:
    page = renderer.lesson(*_lesson(library, slug, position)).html

    for cls in ("wrapper", "container", "brand", "content", "footer", "preheader"):
        tag = re.search(rf'<[a-z]+ class="{cls}"[^>]*>', page)
        assert tag, f"no element of class {cls}"
        assert re.search(r'style="[^"]+"', tag.group(0)), f"class {cls} is styled by class only"
    content_tag = re.search(r'<td class="content"[^>]*>', page)
    assert content_tag and "font-size: 17px" in content_tag.group(0)
    body_tags = _tags(_content_cell(page), "p", "h1", "h2", "h3", "ul", "ol", "li", "a")
    assert body_tags
    unstyled = [t for t in body_tags if "style=" not in t]
    assert unstyled == []


def test_only_the_media_query_stays_in_a_style_block(
    library: dict[str, Sequence], renderer: Renderer
) -> None:
    page = renderer.lesson(*_lesson(library, "glute-accelerator", 1)).html

    styles = re.findall(r"<style[^>]*>(.*?)</style>", page, re.S)
    assert len(styles) == 1
    assert "@media only screen and (max-width: 620px)" in styles[0]
    assert ".container { width: 100% !important" in styles[0]
    # Plain class rules were moved onto the elements, not left for clients that drop <style>.
    without_media = re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", styles[0])
    assert "{" not in without_media


@pytest.mark.parametrize(("slug", "position"), ALL)
def test_a_hidden_preheader_carries_the_lessons_preheader(
    library: dict[str, Sequence], renderer: Renderer, slug: str, position: int
) -> None:
    sequence, lesson = _lesson(library, slug, position)
    page = renderer.lesson(sequence, lesson).html

    match = re.search(r'<div class="preheader" style="([^"]*)">(.*?)</div>', page, re.S)
    assert match, "no preheader"
    style, inner = match.groups()
    assert "display: none" in style
    assert "mso-hide: all" in style
    assert html.unescape(inner).startswith(lesson.preheader)
    # It comes first in <body>, so it is what inboxes show after the subject.
    body = page[page.index("<body") :]
    assert body.index('class="preheader"') < body.index('class="wrapper"')


@pytest.mark.parametrize(("slug", "position"), ALL)
def test_footer_has_postal_address_and_unsubscribe_link(
    library: dict[str, Sequence], renderer: Renderer, settings: Settings, slug: str, position: int
) -> None:
    message = renderer.lesson(*_lesson(library, slug, position))

    footer = re.search(r'<td class="footer"[^>]*>(.*?)</td>', message.html, re.S)
    assert footer, "no footer"
    assert settings.postal_address in footer.group(1)
    assert 'href="%%unsubscribeurl%%"' in footer.group(1)
    assert settings.postal_address in message.text
    assert "%%unsubscribeurl.t%%" in message.text

    page = personalize(message.html, _subs())
    text = personalize(message.text, _subs())
    assert f'href="{html.escape(UNSUBSCRIBE)}"' in page
    assert f"Unsubscribe or change your email preferences: {UNSUBSCRIBE}" in text
    assert "%%" not in page
    assert "%%" not in text


def test_lesson_meta_line_counts_lessons(library: dict[str, Sequence], renderer: Renderer) -> None:
    message = renderer.lesson(*_lesson(library, "glute-accelerator", 3))

    assert "Lesson 3 of 7" in message.html
    assert message.text.startswith("Lesson 3 of 7\n")


# --------------------------------------------------------------------------- text part


@pytest.mark.parametrize(
    ("slug", "position", "label"),
    [
        ("glute-accelerator", 7, "Learn more about The Runners Lab"),
        ("runners-lab-upsell", 1, "See what's inside The Runners Lab"),
        ("runners-lab-upsell", 3, "Join me in The Runners Lab"),
    ],
)
def test_text_part_keeps_links_as_text_then_url(
    library: dict[str, Sequence], renderer: Renderer, slug: str, position: int, label: str
) -> None:
    message = renderer.lesson(*_lesson(library, slug, position))

    assert f"{label} ({LAB_URL})" in message.text
    assert f'href="{LAB_URL}"' in message.html
    assert "[" not in message.text  # no Markdown link syntax left
    assert "<" not in message.text  # no HTML


def test_text_part_has_no_markdown_markup(library: dict[str, Sequence], renderer: Renderer) -> None:
    text = renderer.lesson(*_lesson(library, "glute-accelerator", 7)).text

    assert "**" not in text
    assert "## " not in text
    assert "One idea, start to finish\n-------------------------\n" in text
    assert "\n1. Setup: " in text
    assert "\n  - Heel Rocker Pronation Drill: 8 per side\n" in text


# --------------------------------------------------------------------------- personalization


def test_a_script_name_is_escaped_in_html_and_raw_in_text(
    library: dict[str, Sequence], renderer: Renderer
) -> None:
    message = renderer.lesson(*_lesson(library, "glute-accelerator", 1))
    subs = _subs("<script>alert(1)</script>")

    page = personalize(message.html, subs)
    text = personalize(message.text, subs)

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page
    assert "Hi <script>alert(1)</script>," in text


def test_quotes_and_ampersands_in_a_name_are_escaped_in_html(
    library: dict[str, Sequence], renderer: Renderer
) -> None:
    message = renderer.lesson(*_lesson(library, "glute-accelerator", 2))
    subs = _subs('Zoë "Z" & Co')

    page = personalize(message.html, subs)
    text = personalize(message.text, subs)

    assert "Zoë &quot;Z&quot; &amp; Co" in page
    assert '"Z" &' not in page
    assert 'Hi Zoë "Z" & Co,' in text


@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_first_name_becomes_there(
    library: dict[str, Sequence], renderer: Renderer, blank: str
) -> None:
    message = renderer.lesson(*_lesson(library, "glute-accelerator", 1))
    subs = _subs(blank)

    assert "Hi there," in personalize(message.text, subs)
    assert "Hi there," in personalize(message.html, subs)


def test_a_lesson_is_compiled_once(library: dict[str, Sequence], renderer: Renderer) -> None:
    sequence, lesson = _lesson(library, "glute-accelerator", 4)
    calls: list[str] = []
    compile_ = renderer.compile

    def counting(**kwargs: object) -> Message:
        calls.append(str(kwargs["message_key"]))
        return compile_(**kwargs)  # type: ignore[arg-type]

    renderer.compile = counting  # type: ignore[method-assign]

    first = renderer.lesson(sequence, lesson)
    second = renderer.lesson(sequence, lesson)

    assert second is first
    assert calls == ["glute-accelerator/4"]
    assert renderer.confirmation() is renderer.confirmation()
    assert calls == ["glute-accelerator/4", "confirm"]


def test_the_compiled_message_holds_no_recipient_data(
    library: dict[str, Sequence], renderer: Renderer
) -> None:
    message = renderer.lesson(*_lesson(library, "glute-accelerator", 1))

    assert "%%firstname%%" in message.html
    assert "%%firstname.t%%" in message.text
    assert "%%firstname.t%%" not in message.html  # the raw value never reaches the HTML
    assert message.message_key == "glute-accelerator/1"
    assert message.category == "course"


# --------------------------------------------------------------------------- subjects


def _compile(renderer: Renderer, subject: str) -> Message:
    return renderer.compile(
        message_key="test/1",
        template="broadcast",
        subject=subject,
        preheader="A preheader long enough to be a preheader.",
        body_md="Hi {{ first_name }},\n\nBody.",
        category="test",
        brand="Brand",
        footer_reason="Because.",
    )


def test_a_subject_template_is_personalized(renderer: Renderer) -> None:
    message = _compile(renderer, "{{ first_name }}, your week & more")
    recipient = _recipient(_subs('Ana "A"'))

    mime = _parse(build_mime(message, recipient, date=_NOW, message_id_domain="drip.test"))

    assert message.subject == "%%firstname.t%%, your week & more"
    assert mime["Subject"] == 'Ana "A", your week & more'


def test_a_name_in_the_subject_is_escaped_in_the_html_title(renderer: Renderer) -> None:
    message = _compile(renderer, "{{ first_name }}, & welcome")

    page = personalize(message.html, _subs("</title><script>alert(1)</script>"))

    title = re.search(r"<title>(.*?)</title>", page, re.S)
    assert title
    assert title.group(1) == "&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;, &amp; welcome"
    assert "<script" not in page


# --------------------------------------------------------------------------- MIME

_NOW = datetime(2026, 3, 9, 11, 0, tzinfo=UTC)


def _recipient(subs: dict[str, str]) -> Recipient:
    return Recipient(
        delivery_id=42,
        email="ana@example.com",
        name="Ana Lopez",
        substitutions=subs,
        headers=unsubscribe_headers(UNSUBSCRIBE),
        time_zone="America/New_York",
    )


def _parse(mime: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(mime.as_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_mime_is_multipart_alternative_text_then_html_with_one_click_headers(
    library: dict[str, Sequence], renderer: Renderer, settings: Settings
) -> None:
    sequence, lesson = _lesson(library, "glute-accelerator", 7)
    message = renderer.lesson(sequence, lesson)

    mime = _parse(
        build_mime(message, _recipient(_subs("Ana")), date=_NOW, message_id_domain="drip.test")
    )

    assert mime.get_content_type() == "multipart/alternative"
    parts = list(mime.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert mime["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert mime["List-Unsubscribe"].startswith("<https://")
    assert mime["List-Unsubscribe-Post"] == ONE_CLICK == "List-Unsubscribe=One-Click"
    assert mime["Subject"] == lesson.subject
    assert parseaddr(str(mime["From"])) == (settings.from_name, settings.from_email)
    assert parseaddr(str(mime["To"])) == ("Ana Lopez", "ana@example.com")

    text = parts[0].get_content()
    page = parts[1].get_content()
    assert "Hi Ana," in text
    assert f"Learn more about The Runners Lab ({LAB_URL})" in text
    assert UNSUBSCRIBE in text
    assert html.escape(UNSUBSCRIBE) in page
    assert "%%" not in text + page


def test_mime_headers_are_single_lines_for_a_long_unsubscribe_url(
    library: dict[str, Sequence], renderer: Renderer
) -> None:
    message = renderer.lesson(*_lesson(library, "runners-lab-upsell", 2))
    long_url = "https://drip.test/unsubscribe/" + "A1b2C3d4" * 24
    recipient = Recipient(
        delivery_id=7,
        email="ben@example.com",
        substitutions=recipient_substitutions(RecipientData("Ben", long_url)),
        headers=unsubscribe_headers(long_url),
    )

    raw = build_mime(message, recipient, date=_NOW, message_id_domain="drip.test").as_bytes()

    assert f"\r\nList-Unsubscribe: <{long_url}>\r\n".encode() in raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw


# --------------------------------------------------------------------------- confirmation


def test_confirmation_email_carries_the_confirm_placeholder(renderer: Renderer) -> None:
    message = renderer.confirmation()

    assert 'href="%%confirmurl%%"' in message.html
    assert "Confirm your subscription: %%confirmurl.t%%" in message.text
    assert message.message_key == "confirm"

    confirm = "https://drip.test/confirm/tok?x=1&y=2"
    subs = _subs("Ana", confirm_url=confirm)
    assert f'href="{html.escape(confirm)}"' in personalize(message.html, subs)
    assert f"Confirm your subscription: {confirm}" in personalize(message.text, subs)


# --------------------------------------------------------------------------- Markdown to text


def test_to_text_underlines_headings() -> None:
    text = to_text("# Big title\n\nIntro.\n\n## Smaller\n\nBody.")

    assert text == "Big title\n=========\n\nIntro.\n\nSmaller\n-------\n\nBody.\n"


def test_to_text_indents_nested_lists() -> None:
    text = to_text("- one\n- two\n  - two a\n  - two b\n    - deep\n- three\n")

    assert text == "- one\n- two\n  - two a\n  - two b\n    - deep\n- three\n"


def test_to_text_keeps_an_ordered_lists_start_number() -> None:
    assert to_text("3. three\n4. four\n5. five\n") == "3. three\n4. four\n5. five\n"
    assert to_text("1. a\n1. b\n1. c\n") == "1. a\n2. b\n3. c\n"


def test_to_text_numbers_a_nested_ordered_list_on_its_own() -> None:
    text = to_text("1. first\n2. second\n   1. inner\n   2. inner two\n3. third\n")

    assert text == "1. first\n2. second\n  1. inner\n  2. inner two\n3. third\n"


def test_to_text_drops_emphasis_markers() -> None:
    assert to_text("Some *light*, **strong** and _under_ words.") == (
        "Some light, strong and under words.\n"
    )


def test_to_text_shows_a_link_once_when_its_text_is_its_url() -> None:
    text = to_text(
        "See [https://x.test/a](https://x.test/a), <https://y.test/b>, "
        "[the lab](https://lab.test) and <me@x.test>."
    )

    assert text == (
        "See https://x.test/a, https://y.test/b, the lab (https://lab.test) and me@x.test.\n"
    )


def test_to_text_keeps_code() -> None:
    text = to_text("Run `drip demo` now.\n\n```\nmake test\n  indented\n```\n\nDone.")

    assert text == "Run drip demo now.\n\nmake test\n  indented\n\nDone.\n"


def test_to_text_prefixes_every_quoted_line() -> None:
    text = to_text("> first line\n> continues  \n> after a break\n\nAfter.")

    assert text == "> first line continues\n> after a break\n\nAfter.\n"
