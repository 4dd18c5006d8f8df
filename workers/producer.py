"""Handing delivery ids to the workers from outside them (the CLI, the dashboard)."""

from __future__ import annotations


def celery_enqueue(ids: list[int]) -> None:
    """Send one batch of ids to the workers' send task (imported here: it builds the app)."""
    from workers.tasks import send_task

    # retry=False: an unreachable broker fails at once instead of holding the person's request.
    send_task.apply_async(args=[ids], retry=False)
