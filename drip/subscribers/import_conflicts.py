"""Rows whose columns disagree: the import takes the reading that sends less mail, and says so.

A row is read whole before anything is written. When its columns contradict each other, the
reading that sends no mail wins and one plain sentence per conflict goes into the import's
report, so the list owner sees which rows were read as opt-outs and why:

- unsubscribed (``status``, or an ``unsubscribed_at``/``UNSUB_TIME`` date) with ``course_emails``
  or ``newsletter`` true: unsubscribed;
- ``status`` active with an unsubscribe date: unsubscribed;
- a suppression (``suppressed_reason``, a ``CLEAN_TIME``, a bounce or complaint status) with
  ``course_emails`` or ``newsletter`` true: suppression list only;
- ``course_emails`` and ``newsletter`` both false: unsubscribed, as when someone unticks both on
  the preferences page.

An unsubscribed or suppressed row comes out with both choices false, so nothing downstream can
read a "true" left in the file as a wish for mail.
"""

from __future__ import annotations

from dataclasses import replace

from drip.subscribers.csvmap import ACTIVE, UNSUBSCRIBED, ImportRow


def safer_reading(row: ImportRow) -> tuple[ImportRow, list[str]]:
    """``row`` with its conflicts settled towards less mail, and one sentence per conflict."""
    wanted = _wanted(row)
    if row.suppressed:
        notes = []
        if wanted:
            notes.append(
                f"suppressed ({row.status}), but {wanted}: "
                "only added to the suppression list, no mail"
            )
        return _no_mail(row), notes
    if row.status == UNSUBSCRIBED:
        notes = []
        if row.stated_status == ACTIVE:
            notes.append(
                "status is active, but the row has an unsubscribe date: "
                "imported as unsubscribed, no mail"
            )
        if wanted:
            notes.append(f"unsubscribed, but {wanted}: kept unsubscribed, no mail")
        return _no_mail(row), notes
    if row.course_emails is False and row.newsletter is False:
        return _no_mail(replace(row, status=UNSUBSCRIBED)), [
            "course_emails and newsletter are both false, which means unsubscribed from "
            "everything: imported as unsubscribed, no mail"
        ]
    return row, []


def _wanted(row: ImportRow) -> str:
    """The choices the row says are on, as a sentence's clause ("" if none)."""
    names = [
        name
        for name, value in (("course_emails", row.course_emails), ("newsletter", row.newsletter))
        if value
    ]
    return " and ".join(names) + (" are true" if len(names) > 1 else " is true") if names else ""


def _no_mail(row: ImportRow) -> ImportRow:
    return replace(row, course_emails=False, newsletter=False)
