"""How sending is doing, in `drip stats` (tables and --json) and GET /api/v1/admin/stats.

One lesson unknown past the settle time, one failed, one unknown still young; on both databases.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Engine

from drip.cli.main import main
from drip.cli.stats import render
from drip.clock import FrozenClock
from drip.engine import pause as engine_state
from drip.esp.memory import MemoryBackend
from drip.reports.stats import Stats, as_json, collect
from drip.runtime import Runtime
from drip.settings import Settings, get_settings
from tests.conftest import REPO
from tests.helpers import add_subscriber, run_tick
from tests.sending_support import Unsettled, unsettled
from tests.tracking_support import ADMIN_TOKEN, client_for, tracking_settings

KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return tracking_settings(tmp_path, KEY)


@pytest.fixture
def rows(rt: Runtime, memory_backend: MemoryBackend, clock: FrozenClock) -> Unsettled:
    return unsettled(rt, memory_backend, clock)


def _collect(rt: Runtime) -> Stats:
    with rt.sessions() as session:
        return collect(
            session,
            rt.library,
            rt.settings.course_sequence,
            rt.clock(),
            unknown_settle_minutes=rt.settings.unknown_settle_minutes,
        )


def test_the_json_counts_each_state_and_names_the_commands(rt: Runtime, rows: Unsettled) -> None:
    sending = as_json(_collect(rt))["sending"]

    assert sending["deliveries"] == {"queued": 0, "sending": 0, "unknown": 2, "failed": 1}
    assert sending["paused"] is False and sending["paused_reason"] is None
    assert sending["unknown_needing_a_person"] == 1
    assert sending["unknown_awaiting_the_provider"] == 1
    assert sending["failed_last_7_days"] == 1
    advice = " ".join(sending["advice"])
    assert "`drip deliveries unknown`" in advice and "--all-unknown" in advice
    assert "`drip deliveries failed`" in advice
    assert "drip sending resume" not in advice  # not paused


def test_a_failure_older_than_a_week_is_still_counted_but_not_recent(
    rt: Runtime, rows: Unsettled, clock: FrozenClock
) -> None:
    clock.advance(timedelta(days=8))

    sending = as_json(_collect(rt))["sending"]

    assert sending["deliveries"]["failed"] == 1
    assert sending["failed_last_7_days"] == 0
    assert sending["unknown_needing_a_person"] == 2  # the young one has waited long enough too


def test_a_pause_shows_its_reason_its_start_and_the_resume_command(
    rt: Runtime, clock: FrozenClock
) -> None:
    add_subscriber(rt, "ana@example.com")
    with rt.transaction() as session:
        engine_state.pause(session, "10 sends failed in a row; last error: 401", clock())
    run_tick(rt)  # paused: the tick only probes, the lesson is not claimed yet
    clock.advance(timedelta(minutes=1))

    sending = as_json(_collect(rt))["sending"]
    text = render(_collect(rt))

    assert sending["paused"] is True
    assert sending["paused_reason"] == "10 sends failed in a row; last error: 401"
    assert sending["paused_since"] == (clock() - timedelta(minutes=1)).isoformat()
    assert "`drip sending resume`" in " ".join(sending["advice"])
    assert "Sending: PAUSED (10 sends failed in a row; last error: 401)" in text
    assert sending["deliveries"] == {"queued": 0, "sending": 0, "unknown": 0, "failed": 0}


def test_the_terminal_report_ends_with_the_states_and_what_to_run(
    rt: Runtime, rows: Unsettled
) -> None:
    text = render(_collect(rt))
    tail = text[text.index("Sending: running") :].splitlines()

    assert tail[1].split() == ["state", "emails"]
    assert tail[3].split() == ["queued", "0"]
    assert tail[5].split()[:2] == ["unknown", "2"]
    assert "(1 need a person, 1 await the provider)" in tail[5]
    assert tail[6].split()[:2] == ["failed", "1"] and "(1 in the last 7 days)" in tail[6]
    assert any("`drip deliveries unknown`" in line for line in tail[7:])
    assert any("`drip deliveries failed`" in line for line in tail[7:])


def test_all_is_well_means_no_advice(rt: Runtime) -> None:
    add_subscriber(rt, "ana@example.com")
    run_tick(rt)

    sending = as_json(_collect(rt))["sending"]

    assert sending["advice"] == []
    assert sending["deliveries"] == {"queued": 0, "sending": 0, "unknown": 0, "failed": 0}
    assert "Sending: running" in render(_collect(rt))


def test_the_admin_api_has_the_sending_part(rt: Runtime, rows: Unsettled) -> None:
    answer = client_for(rt).get(
        "/api/v1/admin/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )

    assert answer.status_code == 200
    sending = answer.json()["sending"]
    assert sending == as_json(_collect(rt))["sending"]
    assert sending["deliveries"]["unknown"] == 2 and sending["unknown_needing_a_person"] == 1


def test_the_stats_command_prints_the_states_as_text_and_json(
    rt: Runtime, rows: Unsettled, engine: Engine
) -> None:
    env = {
        "DRIP_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "DRIP_CONTENT_DIR": str(REPO / "content" / "lessons"),
        "DRIP_TEMPLATES_DIR": str(REPO / "templates"),
        "DRIP_EMAIL_BACKEND": "memory",
        "DRIP_RUNNERS_LAB_URL": "https://lab.test/join",
    }
    get_settings.cache_clear()
    try:
        text = CliRunner().invoke(main, ["stats"], env=env)
        data = CliRunner().invoke(main, ["stats", "--json"], env=env)
    finally:
        get_settings.cache_clear()

    assert text.exit_code == 0, text.output
    assert "Sending: running" in text.output
    assert "`drip deliveries unknown`" in text.output
    assert "`drip deliveries failed`" in text.output
    assert data.exit_code == 0, data.output
    sending: dict[str, Any] = json.loads(data.output)["sending"]
    # The command reads the system clock: counts per state do not depend on it.
    assert sending["deliveries"] == {"queued": 0, "sending": 0, "unknown": 2, "failed": 1}
    assert sending["paused"] is False
