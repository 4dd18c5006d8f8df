"""Reading Celery beat's schedule in tests (plain functions)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def interval_seconds(entry: dict[str, Any]) -> float:
    """The period of a beat_schedule entry, in seconds, whatever form it was written in."""
    schedule = entry["schedule"]
    if isinstance(schedule, (int, float)):
        return float(schedule)
    if isinstance(schedule, timedelta):
        return schedule.total_seconds()
    return float(schedule.run_every.total_seconds())  # celery.schedules.schedule


def entries_for(schedule: dict[str, dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The entries of ``schedule`` that send ``task``."""
    return [entry for entry in schedule.values() if entry["task"] == task]
