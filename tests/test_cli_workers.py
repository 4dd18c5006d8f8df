"""`drip worker` and `drip beat` refuse to start on a broken course or setting, before Celery.

Run as the real command (a subprocess of ``python -m drip.cli``, what the ``drip`` entry point
calls), so what is tested is what an operator sees: the exit code and every problem as
``path:line: message``, never a traceback and never a Celery process that starts anyway.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BROKEN = REPO / "tests" / "fixtures" / "content" / "broken"


def run(command: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    base["DRIP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'drip.sqlite3'}"
    base["DRIP_BROKER_URL"] = "redis://127.0.0.1:1/0"  # never reached: refused before Celery
    base["PYTHONPATH"] = str(REPO)  # this checkout's drip, whichever one the venv installed
    return subprocess.run(
        [sys.executable, "-m", "drip.cli", command],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_broken_course_stops_the_command_with_every_problem(command: str, tmp_path: Path) -> None:
    result = run(command, tmp_path, DRIP_CONTENT_DIR=str(BROKEN))
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith(str(BROKEN))]
    folders = {Path(line.split(":", 1)[0]).relative_to(BROKEN).parts[0] for line in problems}
    assert folders == {p.name for p in BROKEN.iterdir() if p.is_dir()}  # one or more per folder
    assert "refusing to start" in result.stderr
    assert "Traceback" not in result.stderr and "celery" not in result.stdout.lower()


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_a_bad_setting_stops_the_command_naming_it(command: str, tmp_path: Path) -> None:
    result = run(command, tmp_path, DRIP_TICK_SECONDS="every minute")
    assert result.returncode == 2
    assert "DRIP_TICK_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_unknown_log_level_naming_the_choices() -> None:
    from click.testing import CliRunner

    from drip.cli import main

    result = CliRunner().invoke(main, ["serve", "--log-level", "LOUD"])
    assert result.exit_code == 2
    assert "'LOUD' is not one of" in result.output and "'warning'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
