"""Running the doctor's checks in order: a check whose prerequisite did not pass is skipped, and
no check ever raises.

Contract of :func:`run_checks`: one :class:`~drip.reports.doctor.findings.CheckResult` per
check, in the order given. A check names the checks it ``needs``, which must come before it; when
one of them failed or was skipped, the check is not run and reads ``skip``. Any exception a check
raises becomes a ``fail`` carrying the exception's first line, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from drip.clock import Clock, system_clock
from drip.reports.doctor.findings import CheckResult, Finding, Status, fail, first_line, skip
from drip.settings import Settings

WorkerPing = Callable[[Settings, float], list[str]]
"""Pings the workers on the settings' broker, waiting at most the given seconds; returns the
names of those that answered. The front end supplies it: the Celery app lives above this layer."""

WORKER_PING_SECONDS = 2.0


@dataclass(frozen=True)
class Context:
    """What every check may use: the validated settings and the few things injected."""

    settings: Settings
    ping_workers: WorkerPing
    clock: Clock = system_clock
    worker_timeout: float = WORKER_PING_SECONDS


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Context], Finding]
    needs: tuple[str, ...] = ()


def run_checks(checks: Iterable[Check], context: Context) -> list[CheckResult]:
    results: dict[str, CheckResult] = {}
    for check in checks:
        results[check.name] = CheckResult.named(check.name, _outcome(check, context, results))
    return list(results.values())


def skipped(checks: Iterable[Check], because: str) -> list[CheckResult]:
    """Every check of ``checks`` as skipped ``because`` of something that did not pass."""
    return [CheckResult.named(check.name, skip(because)) for check in checks]


def _outcome(check: Check, context: Context, done: dict[str, CheckResult]) -> Finding:
    unmet = [name for name in check.needs if done[name].status in (Status.FAIL, Status.SKIP)]
    if unmet:
        return skip(f"needs {' and '.join(unmet)}, which did not pass")
    try:
        return check.run(context)
    except Exception as err:  # the contract: a check reports, it never crashes the doctor
        return fail(
            f"the check stopped on an unexpected error: {first_line(err)}",
            "fix what the error names, then run `drip doctor` again",
        )
