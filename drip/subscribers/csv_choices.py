"""Reading the ``course_emails``, ``newsletter`` and ``source`` cells of drip's export.

The export writes the two choices as ``true``/``false``; files made by hand or by other tools say
the same with ``1``/``0`` or ``yes``/``no``. An empty cell says nothing, so the import keeps what
it would have done without the column. Anything else is refused with the column and the value:
guessing could turn on mail someone turned off.
"""

from __future__ import annotations

from drip.engine.consent import SOURCE_MAX, clip
from drip.errors import InvalidInput

YES = frozenset({"true", "1", "yes"})
NO = frozenset({"false", "0", "no"})


def parse_choice(cell: str, column: str) -> bool | None:
    """True or False from a yes/no cell (any case, spaces around ignored); None when empty.

    Raises :class:`InvalidInput` on ``column``, quoting the value, for anything else."""
    text = cell.strip()
    if not text:
        return None
    if text.lower() in YES:
        return True
    if text.lower() in NO:
        return False
    raise InvalidInput(column, f"{text!r} is not a yes/no value (expected true/false, 1/0, yes/no)")


def import_source(cell: str) -> str | None:
    """The source as given: trimmed, control characters dropped (a NUL can't be stored), cut to
    the column's 100 characters; None when empty."""
    text = (clip(cell.strip(), SOURCE_MAX) or "").strip()
    return text or None
