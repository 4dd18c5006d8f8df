"""Click and open tracking in the emails: which links are rewritten, and the signed tokens."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from drip.clock import FrozenClock
from drip.content.loading import load_library
from drip.content.render import Renderer
from drip.esp.base import personalize
from drip.esp.memory import MemoryBackend
from drip.runtime import Runtime
from drip.settings import Settings
from drip.tokens import BadToken
from drip.tracking.links import rewrite_links, tracking_substitutions
from drip.tracking.tokens import TrackingSigner
from tests.conftest import make_settings
from tests.tracking_support import tracking_settings, upsell_delivery

LAB_URL = "https://lab.test/join"
PUBLIC = "https://drip.test"
KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = TrackingSigner("test-secret-key-0123456789", PUBLIC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tracking_settings(tmp_path, KEY)


def _hrefs(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'<a\b[^>]*\shref="([^"]*)"', page)]


# --------------------------------------------------------------------------- rewriting


def test_every_web_link_becomes_a_numbered_placeholder_in_order() -> None:
    page = (
        '<p><a href="https://a.test/x?y=1&amp;z=2">A</a> <a class="button" href="http://b.test/">'
        "B</a> <a href='https://a.test/x?y=1&amp;z=2'>A again</a></p>"
    )

    rewritten, links = rewrite_links(page)

    assert links == ("https://a.test/x?y=1&z=2", "http://b.test/", "https://a.test/x?y=1&z=2")
    assert _hrefs(rewritten) == ["%%link0%%", "%%link1%%"]
    assert "href='%%link2%%'" in rewritten
    assert 'class="button"' in rewritten


@pytest.mark.parametrize(
    "href",
    [
        "%%unsubscribeurl%%",
        "%%confirmurl%%",
        "https://drip.test/unsubscribe/42.abc",
        "https://drip.test/t/c/1.0.aA.sig",
        "mailto:coach@drip.test",
        "tel:+15555550100",
        "#top",
    ],
)
def test_unsubscribe_placeholder_own_and_non_web_links_are_left_alone(href: str) -> None:
    page = f'<a href="{href}">x</a>'

    rewritten, links = rewrite_links(page, never=(f"{PUBLIC}/unsubscribe", f"{PUBLIC}/t/"))

    assert (rewritten, links) == (page, ())


def test_a_tracked_lesson_has_placeholders_a_pixel_and_an_untracked_unsubscribe_link(
    settings: Settings,
) -> None:
    library = load_library(settings.content_dir, runners_lab_url=settings.runners_lab_url)
    renderer = Renderer(settings, tracking=True)
    sequence = library["runners-lab-upsell"]

    message = renderer.lesson(sequence, sequence.lessons[0])

    assert message.links == (LAB_URL,)
    assert message.open_tracking
    assert _hrefs(message.html) == ["%%link0%%", "%%unsubscribeurl%%"]
    assert 'src="%%openpixelurl%%"' in message.html
    assert f"({LAB_URL})" in message.text  # the text part keeps the real URL


def test_the_confirmation_email_is_never_tracked(settings: Settings) -> None:
    message = Renderer(settings, tracking=True).confirmation()

    assert message.links == ()
    assert not message.open_tracking
    assert "openpixel" not in message.html
    assert 'href="%%confirmurl%%"' in message.html


def test_tracking_settings_off_leave_links_and_pixel_out(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, track_opens=False, track_clicks=False)
    library = load_library(settings.content_dir, runners_lab_url=settings.runners_lab_url)
    sequence = library["runners-lab-upsell"]

    message = Renderer(settings, tracking=True).lesson(sequence, sequence.lessons[0])

    assert (message.links, message.open_tracking) == ((), False)
    assert f'href="{LAB_URL}"' in message.html
    assert "<img" not in message.html


def test_a_renderer_without_tracking_renders_as_before(settings: Settings) -> None:
    library = load_library(settings.content_dir, runners_lab_url=settings.runners_lab_url)
    sequence = library["runners-lab-upsell"]

    message = Renderer(settings).lesson(sequence, sequence.lessons[0])

    assert message.links == ()
    assert f'href="{LAB_URL}"' in message.html


# --------------------------------------------------------------------------- the send path


def test_a_sent_email_carries_signed_links_bound_to_its_delivery(
    rt: Runtime, clock: FrozenClock, memory_backend: MemoryBackend
) -> None:
    _, delivery_id = upsell_delivery(rt, "ana@example.com", clock)
    signer = TrackingSigner(rt.secret, rt.settings.public_url)

    [email] = memory_backend.sent_to("ana@example.com")
    links = _hrefs(email.html)
    pixel = re.search(r'<img src="([^"]+)"', email.html)

    assert "%%" not in email.html and "%%" not in email.text
    assert links[0].startswith("https://drip.test/t/c/")
    assert signer.read_click(links[0].rsplit("/", 1)[1]) == (delivery_id, 0, LAB_URL)
    assert links[1].startswith("https://drip.test/unsubscribe/")  # never tracked
    assert pixel is not None
    token = html.unescape(pixel.group(1)).removeprefix("https://drip.test/t/o/")
    assert signer.read_open(token.removesuffix(".gif")) == delivery_id
    assert LAB_URL in email.text and "/t/c/" not in email.text


def test_substitutions_cover_every_link_and_the_pixel(settings: Settings) -> None:
    library = load_library(settings.content_dir, runners_lab_url=settings.runners_lab_url)
    sequence = library["runners-lab-upsell"]
    message = Renderer(settings, tracking=True).lesson(sequence, sequence.lessons[1])

    subs = tracking_substitutions(SIGNER, message, 7)
    page = personalize(message.html, subs)

    assert set(subs) == {f"%%link{i}%%" for i in range(len(message.links))} | {
        "%%openpixelurl%%",
        "%%openpixelurl.t%%",
    }
    assert not re.search(r"%%link\d+%%|%%openpixelurl%%", page)


# --------------------------------------------------------------------------- tokens


def test_a_click_token_round_trips_the_exact_url() -> None:
    url = "https://lab.test/join?utm_source=drip&utm_campaign=glute 1&x=é"
    token = SIGNER.click_token(12, 3, url)

    assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
    assert SIGNER.read_click(token) == (12, 3, url)


def _swap(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: _swap(t, 0, "13"),  # another delivery
        lambda t: _swap(t, 1, "1"),  # another link position
        lambda t: _swap(t, 2, SIGNER.click_token(12, 0, "https://evil.test/").split(".")[2]),
        lambda t: _swap(t, 3, "A" * 22),  # a made-up signature
        lambda t: t[:-1],
        lambda t: t + ".x",
        lambda t: "",
    ],
)
def test_a_tampered_click_token_is_refused(tamper: object) -> None:
    token = SIGNER.click_token(12, 0, LAB_URL)

    with pytest.raises(BadToken):
        SIGNER.read_click(tamper(token))  # type: ignore[operator]


def test_tokens_of_one_kind_or_secret_are_not_valid_as_another() -> None:
    other = TrackingSigner("another-secret-0123456789", PUBLIC)

    with pytest.raises(BadToken):
        SIGNER.read_click(other.click_token(1, 0, LAB_URL))
    with pytest.raises(BadToken):
        SIGNER.read_open(other.open_token(1))
    with pytest.raises(BadToken):
        SIGNER.read_open(SIGNER.click_token(1, 0, LAB_URL))
    assert SIGNER.read_open(SIGNER.open_token(1)) == 1


def test_only_web_urls_are_ever_redirected_to() -> None:
    token = SIGNER.click_token(1, 0, "javascript:alert(1)")  # even if we had signed one

    with pytest.raises(BadToken):
        SIGNER.read_click(token)
