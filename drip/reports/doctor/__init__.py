"""``drip doctor``: checks a deploy end to end and says what to fix, one result per check.

- :mod:`~drip.reports.doctor.checklist`: the checks in order and :func:`diagnose`, the entry.
- :mod:`~drip.reports.doctor.findings`: a result (``ok``, ``warn``, ``fail``, ``skip``).
- :mod:`~drip.reports.doctor.runner`: order, prerequisites, no check ever raising.
- one module per area: settings and webhooks, the database, Redis and the broker and workers,
  beat's last tick, the tracking drain's lag, the content, the email backend, the From domain's
  DNS records.

Nothing is imported here: the workers import :mod:`~drip.reports.doctor.beat` (the tick
records when it ran) and need none of the rest.
"""
