"""Broadcasts: newsletters a marketer composes, segments, previews, schedules and sends.

Modules, each a small piece with its own contract:

- :mod:`~drip.broadcasts.status`: the status machine and its audit trail (who, when, from, to);
- :mod:`~drip.broadcasts.segments`: a JSON segment spec compiled to one SQL ``WHERE``;
- :mod:`~drip.broadcasts.compose`: create, update, validate (the lesson rules for bodies);
- :mod:`~drip.broadcasts.validation`: every problem of a subject, preheader and body at once;
- :mod:`~drip.broadcasts.message`: render once per broadcast version (the send path's);
- :mod:`~drip.broadcasts.preview`: preview and ``[TEST]`` sends, untracked, no delivery rows;
- :mod:`~drip.broadcasts.zones`: absolute or local-time scheduling, split into zone groups;
- :mod:`~drip.broadcasts.ratelimit`: the global rate limit shared through Redis;
- :mod:`~drip.broadcasts.tick`: beat's step: start due sends, restart silent chains, finish;
- :mod:`~drip.broadcasts.sending`: the page step (listmonk's pipe: page by id against a
  snapshot, checkpoint in the same transaction, enqueue after commit);
- :mod:`~drip.broadcasts.control`: pause, resume, cancel (and halt on a broken segment);
- :mod:`~drip.broadcasts.results`: progress and results from the delivery and tracking tables.

Nothing is imported here on purpose: :mod:`drip.engine.dispatch` imports
:mod:`drip.broadcasts.message`, and other modules here import drip.subscribers, which imports
drip.engine.dispatch back.
"""
