"""When is a subscriber's next drip email due? Pure functions, no clock, no I/O.

Every enrollment stores ``next_send_at`` in UTC; a beat tick sends whatever :func:`is_due`.
A lesson goes out at the subscriber's *local* send time (a :class:`SendWindow`) in their IANA
zone, so 07:00 stays 07:00 local on both sides of a DST change. Two rules keep sends sane:

* at most one lesson per subscriber per sequence per local day, and
* after an outage an overdue subscriber gets one lesson, never a burst: :func:`next_due` is
  computed from the *actual* send time, so the following lesson waits for the next allowed day.

Callers pass ``now``; every datetime argument must be timezone-aware (``ValueError``
otherwise), and every returned datetime is in UTC (``tzinfo is datetime.UTC``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "WEEKDAYS",
    "SendWindow",
    "first_due",
    "is_due",
    "is_valid_zone",
    "local_to_utc",
    "next_due",
    "parse_send_days",
    "resolve_zone",
]

WEEKDAYS: dict[str, int] = {
    "mon": 0,
    "tue": 1,
    "wed": 2,
    "thu": 3,
    "fri": 4,
    "sat": 5,
    "sun": 6,
}
"""Day name -> ``date.weekday()`` number (Monday=0)."""

# Files that ZoneInfo loads but that are not IANA zone names: ``localtime`` is a link to the
# host's own zone, so accepting it would make a subscriber's send time depend on the server.
_NOT_ZONE_NAMES = frozenset({"localtime", "posixrules"})


def _is_int(value: object) -> bool:
    # bool is an int subclass; ``hour=True`` is a bug, not 1 o'clock.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SendWindow:
    """The local wall-clock time a lesson goes out, and the local weekdays it may go out on.

    ``hour`` is 0..23, ``minute`` 0..59, ``days`` a non-empty set of weekday numbers
    (Monday=0 .. Sunday=6; see :func:`parse_send_days`). A per-lesson hour override is simply a
    different window, e.g. ``dataclasses.replace(window, hour=18)``.

    Raises ``ValueError`` naming the bad field. ``days`` may be given as any iterable of ints;
    it is stored as a frozenset so the window stays hashable.
    """

    hour: int
    minute: int = 0
    days: frozenset[int] = frozenset(range(7))

    def __post_init__(self) -> None:
        if not _is_int(self.hour) or not 0 <= self.hour <= 23:
            raise ValueError(f"hour must be an int in 0..23, got {self.hour!r}")
        if not _is_int(self.minute) or not 0 <= self.minute <= 59:
            raise ValueError(f"minute must be an int in 0..59, got {self.minute!r}")
        days = frozenset(self.days)
        if not days:
            # An empty set would mean "never send", which is always a configuration mistake.
            raise ValueError("days must name at least one weekday")
        bad = sorted(repr(d) for d in days if not _is_int(d) or not 0 <= d <= 6)
        if bad:
            raise ValueError(f"days must be weekday numbers 0..6 (Monday=0), got {', '.join(bad)}")
        object.__setattr__(self, "days", days)


def parse_send_days(names: Iterable[str]) -> frozenset[int]:
    """Turn day names (``"mon"`` .. ``"sun"``, case-insensitive, surrounding blanks ignored)
    into weekday numbers (Monday=0).

    Returns a non-empty frozenset. Raises ``ValueError`` naming the first unknown value, if
    ``names`` is empty, or if it is a single string (``"mon"`` would otherwise be read as the
    letters m, o, n).
    """
    if isinstance(names, str):
        raise ValueError(f"send days must be a list of day names, not the string {names!r}")
    days: set[int] = set()
    for name in names:
        key = str(name).strip().lower()
        if key not in WEEKDAYS:
            raise ValueError(f"unknown send day {name!r}; expected one of {', '.join(WEEKDAYS)}")
        days.add(WEEKDAYS[key])
    if not days:
        raise ValueError("send days must name at least one day")
    return frozenset(days)


def is_valid_zone(name: str) -> bool:
    """True if ``name`` is an IANA time zone name this host can load (e.g. ``"Europe/Berlin"``).

    Exact match: no case folding or trimming. Rejects ``localtime``/``posixrules``, which load
    but are host files rather than zone names. Never raises for a bad name.
    """
    if name in _NOT_ZONE_NAMES:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError covers "", absolute or escaping paths, and files that are not TZif data.
        return False
    return True


def resolve_zone(name: str | None, fallback: str) -> ZoneInfo:
    """The subscriber's zone if ``name`` is a valid IANA name, else the ``fallback`` zone.

    ``None``, ``""`` and unknown names all fall back. ``fallback`` is checked on every call, even
    when it is not used, so a misconfigured default fails at once rather than on the first
    subscriber without a zone: ``ValueError`` if it is not a valid zone.
    """
    if not is_valid_zone(fallback):
        raise ValueError(f"fallback time zone {fallback!r} is not a valid IANA zone name")
    if name and is_valid_zone(name):
        return ZoneInfo(name)
    return ZoneInfo(fallback)


def _require_aware(value: datetime, what: str) -> None:
    # Guessing a zone for a naive datetime would silently shift sends by hours; refuse instead.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value!r}")


def local_to_utc(day: date, hour: int, minute: int, tz: ZoneInfo) -> datetime:
    """The UTC instant at which the wall clock in ``tz`` shows ``hour:minute`` on ``day``.

    DST edges, resolved the PEP 495 ``fold=0`` way:

    * nonexistent time (spring-forward gap): moves forward by the length of the gap, e.g.
      02:30 on 2026-03-08 in America/New_York -> 03:30 EDT (07:30 UTC);
    * repeated time (autumn fall-back): the FIRST occurrence, e.g. 01:30 on 2026-11-01 in
      America/New_York -> 01:30 EDT (05:30 UTC), not 01:30 EST.

    Either way the result is never earlier than the requested wall time, so it never falls on an
    earlier local date. ``day`` must be a plain ``date``: a ``datetime`` is refused with
    ``TypeError`` because its date part may be a UTC date, not a local one.
    """
    if isinstance(day, datetime):
        raise TypeError("day must be a date, not a datetime (whose date may not be local)")
    # fold=0 gives exactly the documented rules: in a gap the pre-transition offset applies
    # (pushing the time forward), and in an overlap the first (pre-transition) occurrence wins.
    local = datetime.combine(day, time(hour, minute), tzinfo=tz)
    return local.astimezone(UTC)


def _next_allowed_day(after: date, days: frozenset[int]) -> date:
    """The first date strictly after ``after`` whose weekday is in ``days`` (non-empty)."""
    for offset in range(1, 8):
        candidate = after + timedelta(days=offset)
        if candidate.weekday() in days:
            return candidate
    raise ValueError("days must name at least one weekday")  # unreachable for a SendWindow


def first_due(now: datetime, tz: ZoneInfo, window: SendWindow, *, immediately: bool) -> datetime:
    """When the first lesson of an enrollment made at ``now`` is due, in UTC.

    ``immediately=True``: ``now`` itself (send days are not consulted). Otherwise today's send
    time (local date of ``now`` in ``tz``) if today is an allowed day and that time is not yet
    past (``>= now``), else the send time on the next allowed local day.
    """
    _require_aware(now, "now")
    now_utc = now.astimezone(UTC)
    if immediately:
        return now_utc
    today = now.astimezone(tz).date()
    if today.weekday() in window.days:
        todays = local_to_utc(today, window.hour, window.minute, tz)
        # Compare in UTC: aware datetimes sharing one tzinfo compare by wall time, which is wrong
        # inside a repeated (fall-back) hour.
        if todays >= now_utc:
            return todays
    day = _next_allowed_day(today, window.days)
    return local_to_utc(day, window.hour, window.minute, tz)


def next_due(sent_at: datetime, tz: ZoneInfo, window: SendWindow) -> datetime:
    """When the lesson after one actually sent at ``sent_at`` is due, in UTC.

    The send time on the first allowed local date STRICTLY AFTER the local date (in ``tz``) of
    ``sent_at``. Hence at most one lesson per local day, and after an outage (``sent_at`` days
    late) the next lesson waits for the following allowed day instead of going out at once.
    ``window`` is the window of the lesson being scheduled, so per-lesson overrides apply.
    """
    _require_aware(sent_at, "sent_at")
    sent_day = sent_at.astimezone(tz).date()
    day = _next_allowed_day(sent_day, window.days)
    return local_to_utc(day, window.hour, window.minute, tz)


def is_due(next_send_at: datetime, now: datetime) -> bool:
    """True if ``next_send_at <= now``, comparing the instants (not wall times)."""
    _require_aware(next_send_at, "next_send_at")
    _require_aware(now, "now")
    # Convert first: two datetimes with the same ZoneInfo compare by wall clock and ignore fold.
    return next_send_at.astimezone(UTC) <= now.astimezone(UTC)
