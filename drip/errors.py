"""drip's exceptions: one small tree.

DripError
 ├── SettingsError        a DRIP_* variable is missing or malformed (message names it)
 ├── ContentError         a lesson or sequence file is broken (carries every problem found)
 ├── InvalidInput(ValueError)  user input rejected; ``field`` names what was wrong
 └── BackendError         the email backend failed
      ├── TransientBackendError   nothing was sent; worth retrying later (refused, connect
      │    │                      timeout, SMTP 4xx before DATA)
      │    └── ThrottledBackendError  the provider asked us to slow down (429, 5xx, SMTP 421):
      │                           every worker waits; never counts as a failure
      ├── AmbiguousBackendError   the request may have reached the provider and no answer came
      │                           back (read timeout, reset while reading, deadline passed,
      │                           SMTP timeout after DATA): the rows become ``unknown``, never
      │                           re-sent blindly
      └── PermanentBackendError   retrying won't help (400, 401, 403, 413, SMTP 5xx)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class DripError(Exception):
    """Base of every error drip raises on purpose."""


class SettingsError(DripError):
    """The environment does not make a valid configuration."""


@dataclass(frozen=True)
class Problem:
    """One problem in a content file, reported as ``path:line: message``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class ContentError(DripError):
    """A sequence failed its checks; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InvalidInput(DripError, ValueError):
    """Input from a user or a form was rejected; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class BackendError(DripError):
    """The email backend could not take a message; ``status`` is the provider's code if any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class TransientBackendError(BackendError):
    """Retry later. ``retry_after`` (seconds) is the provider's hint, if it gave one."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)


class ThrottledBackendError(TransientBackendError):
    """The provider is alive but asks for less: 429 (rate limit) or 5xx (overloaded, down).

    Nothing was sent. Every worker holds off until ``retry_after`` (the provider's
    ``Retry-After`` or ``X-RateLimit-Reset``, else a backoff), and the rows go back to the queue
    without using up an attempt.
    """


class AmbiguousBackendError(BackendError):
    """The request left and no usable answer came back: the provider may have the email.

    Retrying could send it twice, so the rows are marked ``unknown`` and settled by the
    provider's own events (SendGrid's ``custom_args`` carry the delivery id) or by a person.
    """


class PermanentBackendError(BackendError):
    """Retrying the same request cannot succeed."""
