"""Schemathesis against ``/openapi.json``: no operation answers a 5xx, whatever it is sent.

The real app on the real PostgreSQL database, with the admin token (and the signup webhook's
token) sent as headers, so the admin operations are exercised past their authentication. It runs
schemathesis's own engine (the CLI's: examples, coverage and fuzzing phases) rather than its
pytest plugin, whose fixture-built schemas do not work with pytest 9. Kept small and
deterministic: a fixed seed, derandomized Hypothesis, no example database, a few examples per
operation, schema-conforming and schema-violating data. The one check is "no 5xx".
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import Status, events
from sqlalchemy import Engine

from drip.broadcasts import compose
from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.runtime import Runtime
from drip.web.app import create_app
from tests.conftest import START, truncate_all
from tests.helpers import add_subscriber
from tests.tracking_support import ADMIN_TOKEN, new_key, tracking_settings
from tests.web_support import API_TOKEN, WEBHOOK_SECRET, worker_inline

SEED = 20261126
EXAMPLES_PER_OPERATION = 25  # about 15 s on 2 cores; the coverage phase adds its own cases


def _config() -> schemathesis.Config:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {API_TOKEN}"},  # the signup webhook's token
            "operations": [{"include-path-regex": "^/api/v1/admin", "headers": admin}],
            "generation": {
                "mode": "all",  # schema-conforming and schema-violating data
                "max-examples": EXAMPLES_PER_OPERATION,
                "deterministic": True,
                "database": "none",  # nothing kept between runs: the same cases every time
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
        }
    )


@pytest.fixture
def fuzz_runtime(pg_engine: Engine, tmp_path: Path, redis_url: str) -> Runtime:
    """A runtime on PostgreSQL with two subscribers and a draft, so ids 1 and 2 exist."""
    truncate_all(pg_engine)
    settings = tracking_settings(
        tmp_path,
        new_key(),
        api_tokens=API_TOKEN,
        webhook_secret=WEBHOOK_SECRET,
        redis_url=redis_url,
    )
    clock = FrozenClock(START)
    rt = Runtime.build(settings, engine=pg_engine, backend=MemoryBackend(clock=clock), clock=clock)
    add_subscriber(rt, "ana@example.com", name="Ana")
    add_subscriber(rt, "bob@example.com", name="Bob")
    with rt.transaction() as session:
        compose.create_broadcast(
            session, rt, subject="Hills", body_md="Hi {{ first_name }}", actor="test", now=clock()
        )
    return rt


def _problems(event: Any) -> list[str]:
    """What went wrong in one engine event, as lines to report (none for a good event)."""
    if isinstance(event, events.FatalError):
        raise event.exception
    if isinstance(event, events.NonFatalError):
        return [f"{event.label}: {event.info.title}: {event.info.message}"]
    if not isinstance(event, events.ScenarioFinished) or event.status != Status.FAILURE:
        return []
    found = []
    for case_id, checks in event.recorder.checks.items():
        case = event.recorder.cases[case_id].value
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                found.append(f"{check.name}: {failure.title} <- {case.as_curl_command()}")
    return found


def _statuses(event: Any) -> dict[str, set[int]]:
    """The status codes each operation answered in one finished scenario."""
    answered: dict[str, set[int]] = defaultdict(set)
    if isinstance(event, events.ScenarioFinished):
        for interaction in event.recorder.interactions.values():
            if interaction.response is not None:
                answered[event.label].add(interaction.response.status_code)
    return answered


@pytest.mark.postgres
def test_no_operation_answers_a_server_error(fuzz_runtime: Runtime) -> None:
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json",
        create_app(fuzz_runtime, enqueue=worker_inline(fuzz_runtime)),
        config=_config(),
    )
    problems: list[str] = []
    answered: dict[str, set[int]] = defaultdict(set)

    for event in schemathesis.engine.from_schema(schema).execute():
        problems += _problems(event)
        for label, statuses in _statuses(event).items():
            answered[label] |= statuses

    assert not problems, "\n".join(dict.fromkeys(problems))
    admin = {label: codes for label, codes in answered.items() if " /api/v1/admin" in label}
    assert len(admin) >= 20, sorted(answered)  # every admin operation was called ...
    assert not [label for label, codes in admin.items() if 401 in codes]  # ... with the token
    assert 200 in answered["GET /api/v1/admin/subscribers/{subscriber_id}"]  # on real rows
