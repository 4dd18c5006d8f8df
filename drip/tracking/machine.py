"""Which opens and clicks were made by machines, not people (docs/tracking.md, "Machine rule").

Opens are machine when fetched by a mail privacy proxy, which loads every image whether or not
anyone reads the email:

- Apple Mail Privacy Protection: the bare user agent ``Mozilla/5.0``, or a request from Apple's
  17.0.0.0/8 network without a browser's user agent;
- Gmail's and Yahoo's image proxies (``GoogleImageProxy``, ``ggpht.com``, ``YahooMailProxy``):
  they also hide who opened and when, and cache the image, so they are kept out too;
- the provider said so (SendGrid's ``sg_machine_open``).

Opens and clicks are machine when the user agent is a known security scanner, link previewer,
HTTP library or bot, or is empty. Clicks are also machine when they come as ``HEAD`` requests, or
within ``DRIP_SCANNER_CLICK_SECONDS`` of the send (corporate gateways click every link as the
message arrives; a person has not even seen it yet).
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from functools import lru_cache

_APPLE_NET = ipaddress.ip_network("17.0.0.0/8")
_PROXIES = re.compile(r"googleimageproxy|ggpht\.com|yahoomailproxy", re.IGNORECASE)
_BROWSER = re.compile(r"safari|chrome|firefox|edg/|opera", re.IGNORECASE)
_SCANNERS = re.compile(
    r"barracuda|mimecast|proofpoint|ppops|messagelabs|symantec|trend ?micro|fireeye|sophos"
    r"|forcepoint|cisco|ironport|fortinet|trustwave|zscaler|bingpreview|slackbot|discordbot"
    r"|facebookexternalhit|twitterbot|linkedinbot|whatsapp|telegrambot|skypeuripreview"
    r"|python-requests|python-urllib|aiohttp|httpx|curl/|wget|go-http-client|okhttp|java/"
    r"|libwww|headlesschrome|phantomjs|bot\b|spider|crawler|scanner",
    re.IGNORECASE,
)


@lru_cache(maxsize=4096)  # user agents repeat a lot: one regex search per distinct agent
def is_scanner(user_agent: str | None) -> bool:
    """An empty user agent or a known scanner, previewer, library or bot."""
    ua = (user_agent or "").strip()
    return not ua or _SCANNERS.search(ua) is not None


def _apple_proxy(user_agent: str, ip: str | None) -> bool:
    if user_agent == "Mozilla/5.0":
        return True
    if not ip or _is_browser(user_agent):
        return False
    return _in_apple_net(ip)


@lru_cache(maxsize=4096)  # proxies open from a few addresses, again and again
def _in_apple_net(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in _APPLE_NET
    except ValueError:
        return False


@lru_cache(maxsize=4096)
def _is_browser(user_agent: str) -> bool:
    return _BROWSER.search(user_agent) is not None


def machine_open(user_agent: str | None, ip: str | None, *, provider_flag: bool = False) -> bool:
    """True for an open that says nothing about a person reading (see the module doc)."""
    ua = (user_agent or "").strip()
    if provider_flag or is_scanner(ua) or _is_proxy(ua):
        return True
    return _apple_proxy(ua, ip)


@lru_cache(maxsize=4096)
def _is_proxy(user_agent: str) -> bool:
    return _PROXIES.search(user_agent) is not None


def machine_click(
    user_agent: str | None,
    *,
    head: bool,
    occurred_at: datetime,
    sent_at: datetime | None,
    scanner_seconds: int,
) -> bool:
    """True for a click by a link scanner (see the module doc)."""
    if head or is_scanner(user_agent):
        return True
    if sent_at is None or scanner_seconds <= 0:
        return False
    return (occurred_at - sent_at).total_seconds() < scanner_seconds
