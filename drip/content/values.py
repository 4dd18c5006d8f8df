"""Checks of single values that ``sequence.toml`` and lesson front matter have in common."""

from __future__ import annotations

from typing import TypeGuard


def is_int(value: object) -> TypeGuard[int]:
    """True for an int that is not a bool."""
    # YAML/TOML ``true`` loads as bool, which is an int subclass; it is never a valid number here.
    return isinstance(value, int) and not isinstance(value, bool)


def int_range(value: object, name: str, low: int, high: int) -> str | None:
    """A message if ``value`` is not an int in ``low..high``, else ``None``."""
    if not is_int(value):
        return f"{name} must be an integer {low}..{high}, not {value!r}"
    if not low <= value <= high:
        return f"{name} is {value}; must be {low}..{high}"
    return None
