"""Reading the broadcast forms: what a person typed, as the arguments drip.broadcasts takes.

Only shapes change here (comma lists to lists, a date field to ISO, a wall-clock time and a zone
to a UTC instant through :func:`drip.schedule.local_to_utc`); every rule is checked by
drip.broadcasts itself, whose :class:`InvalidInput` the pages show next to the form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.datastructures import FormData

from drip.broadcasts.segments import STATES
from drip.errors import InvalidInput
from drip.schedule import is_valid_zone, local_to_utc, resolve_zone

CONTENT = ("subject", "preheader", "body_md")
SEGMENT_FIELDS = ("tags_any", "tags_all", "tags_none", "states", "engaged_days")
SEGMENT_DATES = ("signup_after", "signup_before")
STATE_LABELS = {
    "in_course": "taking the course",
    "completed_course": "finished the course",
    "in_upsell": "in a Runners Lab sequence",
    "converted": "bought The Runners Lab",
    "not_converted": "not bought The Runners Lab",
}
_SPLIT = re.compile(r"[,\s]+")


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def content(form: FormData) -> dict[str, str]:
    """Subject, preheader and body as typed (line endings made ``\\n``)."""
    return {name: text(form, name).replace("\r\n", "\n") for name in CONTENT}


def words(value: str) -> list[str]:
    return [w for w in _SPLIT.split(value) if w]


def segment(form: FormData) -> dict[str, Any]:
    """The segment spec of the form's segment fields (only the rules filled in)."""
    spec: dict[str, Any] = {}
    for key in ("tags_any", "tags_all", "tags_none"):
        names = [t.strip() for t in text(form, key).split(",") if t.strip()]
        if names:
            spec[key] = names
    states = [s for s in form.getlist("states") if isinstance(s, str) and s in STATES]
    if states:
        spec["states"] = states
    days = text(form, "engaged_days").strip()
    if days:
        if not days.isdigit():
            raise InvalidInput("segment.engaged_days", "must be a whole number of days")
        spec["engaged_days"] = int(days)
    for key in SEGMENT_DATES:
        value = text(form, key).strip()
        if value:
            spec[key] = value
    return spec


def segment_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """The form's values for a stored segment spec (the reverse of :func:`segment`)."""
    values: dict[str, Any] = {
        key: ", ".join(spec.get(key, [])) for key in ("tags_any", "tags_all", "tags_none")
    }
    values["states"] = list(spec.get("states", []))
    values["engaged_days"] = spec.get("engaged_days", "")
    for key in SEGMENT_DATES:
        values[key] = str(spec.get(key, ""))[:10]
    return values


@dataclass(frozen=True)
class When:
    """The arguments of :func:`drip.broadcasts.zones.schedule`."""

    at: str | datetime
    local_time: bool
    past_zones: str


def schedule(form: FormData, default_zone: str) -> When:
    """``mode=zone``: the wall-clock time in one zone (the coach's by default), as a UTC
    instant; ``mode=local``: that wall-clock time in each subscriber's own zone."""
    raw = text(form, "at").strip()
    if not raw:
        raise InvalidInput("at", "choose a date and a time")
    try:
        wall = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput("at", f"{raw!r} is not a date and time") from None
    if wall.tzinfo is not None:
        raise InvalidInput("at", "give the time without a UTC offset and choose the zone")
    past = text(form, "past_zones") or "now"
    if text(form, "mode") == "local":
        return When(wall.isoformat(timespec="minutes"), True, past)
    zone = text(form, "zone").strip() or default_zone
    if not is_valid_zone(zone):
        raise InvalidInput("zone", f"unknown time zone {zone!r} (e.g. America/New_York)")
    moment = local_to_utc(wall.date(), wall.hour, wall.minute, resolve_zone(zone, default_zone))
    return When(moment, False, past)


def test_addresses(form: FormData) -> list[str]:
    return words(text(form, "to"))
