"""Subscribers: signup with double opt-in, unsubscribe and preferences, GDPR, CSV import/export.

Modules: ``validation`` (clean input), ``signup`` (signup, confirmation emails, purge),
``confirm`` (the link's click), ``preferences`` (unsubscribe, resubscribe, choices), ``gdpr``
(export, erase), ``csvmap``/``importer``/``csv_export`` (CSV), ``queries`` (admin listing),
``store`` (shared helpers).
"""

from drip.subscribers.signup import purge_pending

__all__ = ["purge_pending"]
