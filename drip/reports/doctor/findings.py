"""What one check of ``drip doctor`` found: a status, what it saw, and what to do about it.

Contract: ``detail`` says what was seen, naming the ``DRIP_*`` setting or the DNS record at
fault; ``fix`` says what to do, and is None when there is nothing to do. A ``warn`` is worth a
look and still passes; only a ``fail`` makes the doctor exit non-zero. A ``skip`` is a check
that was not run (a check it needs did not pass, or it does not apply to this deploy).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Finding:
    """The outcome of one check, before it is named."""

    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """One line of the doctor's report; :meth:`as_json` is the ``--json`` shape."""

    check: str
    status: Status
    detail: str
    fix: str | None = None

    @classmethod
    def named(cls, check: str, finding: Finding) -> CheckResult:
        return cls(check, finding.status, finding.detail, finding.fix)

    def as_json(self) -> dict[str, str | None]:
        return {
            "check": self.check,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(detail: str) -> Finding:
    return Finding(Status.OK, detail)


def warn(detail: str, fix: str) -> Finding:
    return Finding(Status.WARN, detail, fix)


def fail(detail: str, fix: str) -> Finding:
    return Finding(Status.FAIL, detail, fix)


def skip(detail: str) -> Finding:
    return Finding(Status.SKIP, detail)


def first_line(err: BaseException) -> str:
    """An exception as one short line for a person: its class and the first line of its message
    (drivers append SQL, hints and links below it; none of that helps on a report)."""
    lines = str(err).strip().splitlines()
    message = lines[0].strip() if lines else ""
    return f"{type(err).__name__}: {message}" if message else type(err).__name__
