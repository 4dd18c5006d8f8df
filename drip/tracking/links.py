"""Click and open tracking in emails: rewrite links once per message, sign them per recipient.

:func:`rewrite_links` runs once when a message is compiled: every ``<a href>`` of the HTML part
that is a plain http(s) URL becomes a placeholder ``%%link0%%``, ``%%link1%%``... and the
original URLs are returned in that order (kept on :attr:`drip.esp.base.Message.links`). Left
alone: links holding a per-recipient placeholder (``%%unsubscribeurl%%``, ``%%confirmurl%%``),
links to our own unsubscribe or tracking paths, and ``mailto:``, ``tel:`` or ``#`` links. So
unsubscribe links are never tracked.

The plain-text part keeps the original URLs: a reader sees where a link goes, and text clicks
are simply not counted (HTML is what nearly every client shows).

:func:`tracking_substitutions` runs per recipient in the send path: one HMAC per link and one
for the pixel (see :mod:`drip.tracking.tokens`), no parsing.
"""

from __future__ import annotations

import html
import re

from drip.esp.base import Message
from drip.tracking.tokens import TrackingSigner

PIXEL_HTML = "%%openpixelurl%%"
PIXEL_TEXT = "%%openpixelurl.t%%"
# The HTML is ours (markdown-it + our layouts, CSS inlined), so a tag-level regex is enough:
# it finds href in any attribute position, quoted with " or '.
_HREF = re.compile(r"""(<a\b[^>]*?\shref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


def link_marker(index: int) -> str:
    return f"%%link{index}%%"


def rewrite_links(page: str, *, never: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """``page`` with trackable hrefs replaced by ``%%linkN%%``, and the original URLs in order.

    ``never``: URL prefixes left untouched (our unsubscribe and tracking paths).
    """
    links: list[str] = []

    def swap(match: re.Match[str]) -> str:
        href = match.group(3)
        url = html.unescape(href).strip()
        if "%%" in url or not url.lower().startswith(("http://", "https://")):
            return match.group(0)
        if url.startswith(never):
            return match.group(0)
        links.append(url)
        quote = match.group(2)
        return f"{match.group(1)}{quote}{link_marker(len(links) - 1)}{quote}"

    return _HREF.sub(swap, page), tuple(links)


def tracking_substitutions(
    signer: TrackingSigner, message: Message, delivery_id: int
) -> dict[str, str]:
    """The tracked URL of each link and the pixel of ``message`` for one delivery.

    HTML placeholders get HTML-escaped values (like every ``%%x%%`` of :mod:`drip.content.render`).
    """
    subs: dict[str, str] = {}
    for index, url in enumerate(message.links):
        subs[link_marker(index)] = html.escape(signer.click_url(delivery_id, index, url))
    if message.open_tracking:
        pixel = signer.open_url(delivery_id)
        subs[PIXEL_HTML] = html.escape(pixel)
        subs[PIXEL_TEXT] = pixel
    return subs
