"""The servers a deploy talks to: Redis, the Celery broker and its workers, the public web app.

Every call is bounded by a short timeout; messages name a server by host, port and database
number, never with the password a URL may hold.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import redis

from drip.reports.doctor.findings import Finding, fail, first_line, ok, warn
from drip.reports.doctor.runner import Context

NETWORK_SECONDS = 3.0
HTTP_SECONDS = 5.0
REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_redis(context: Context) -> Finding:
    return _ping_redis("DRIP_REDIS_URL", context.settings.redis_url)


def check_broker(context: Context) -> Finding:
    url = context.settings.broker_url
    if urlsplit(url).scheme in REDIS_SCHEMES:
        return _ping_redis("DRIP_BROKER_URL", url)
    return _connect_broker(url)


def check_worker(context: Context) -> Finding:
    seconds = context.worker_timeout
    names = context.ping_workers(context.settings, seconds)
    if not names:
        return fail(
            f"no worker answered a ping within {seconds:g} s on DRIP_BROKER_URL "
            f"({where(context.settings.broker_url)})",
            "start `drip worker` with the same DRIP_BROKER_URL (docker compose up -d worker) "
            "and look at its log",
        )
    return ok(f"{len(names)} worker(s) answered: {', '.join(names)}")


def check_healthz(context: Context) -> Finding:
    public_url = context.settings.public_url
    url = f"{public_url}/healthz"
    reach = (
        "start `drip serve` and make DRIP_PUBLIC_URL reach it (DNS name, TLS certificate, "
        "the proxy's route to the web app)"
    )
    request = urllib.request.Request(url, headers={"User-Agent": "drip-doctor"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        return fail(
            f"DRIP_PUBLIC_URL: GET {url} answered {err.code}",
            "look at the web app's log: /healthz answers 503 when the app cannot reach its "
            f"database; anything else is the proxy's answer: {reach}",
        )
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        return fail(f"DRIP_PUBLIC_URL: GET {url} failed: {reason}", reach)
    if not public_url.startswith("https://"):
        return warn(
            f"GET {url} answered {status}, but DRIP_PUBLIC_URL is not https: Gmail and Yahoo "
            "require https for one-click unsubscribe",
            "serve the app behind TLS and set DRIP_PUBLIC_URL to its https address",
        )
    return ok(f"GET {url} answered {status}")


def where(url: str) -> str:
    """``host:port/db`` of a server URL (a socket's path for ``unix://``): enough to recognise
    it, never its password."""
    parts = urlsplit(url)
    if not parts.hostname:
        return parts.path or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number: the connection will say so
        port = ""
    return f"{parts.hostname}{port}{parts.path}"


def _ping_redis(setting: str, url: str) -> Finding:
    try:
        client = redis.Redis.from_url(
            url, socket_timeout=NETWORK_SECONDS, socket_connect_timeout=NETWORK_SECONDS
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError) as err:
        return fail(
            f"{setting}: Redis at {where(url)} does not answer: {first_line(err)}",
            f"start Redis, or correct {setting} (host, port, password, database number)",
        )
    return ok(f"Redis at {where(url)} answers")


def _connect_broker(url: str) -> Finding:
    # Celery's messaging library, for a broker not on Redis (RabbitMQ, say).
    from kombu.connection import Connection

    try:
        with Connection(url, connect_timeout=NETWORK_SECONDS) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1)
    except Exception as err:  # kombu raises each transport's own errors
        return fail(
            f"DRIP_BROKER_URL: the broker at {where(url)} does not answer: {first_line(err)}",
            "start the broker, or correct DRIP_BROKER_URL",
        )
    return ok(f"the broker at {where(url)} answers")
