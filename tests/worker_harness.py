"""Start and stop real Celery worker processes for the end-to-end tests and the benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from celery import Celery

REPO = Path(__file__).resolve().parent.parent


def worker_env(
    *, database_url: str, broker_url: str, sendgrid_url: str, extra: Mapping[str, str] = {}
) -> dict[str, str]:
    """The environment a worker needs to send through a local SendGrid-compatible server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIP_")}
    env.update(
        {
            "DRIP_DATABASE_URL": database_url,
            "DRIP_BROKER_URL": broker_url,
            # The provider's shared hold (drip.engine.throttle) lives beside the test broker.
            "DRIP_REDIS_URL": broker_url,
            "DRIP_EMAIL_BACKEND": "sendgrid",
            "DRIP_SENDGRID_API_URL": sendgrid_url,
            "DRIP_SENDGRID_API_KEY": "SG.test-key",
            "DRIP_SECRET_KEY": "test-secret-key-0123456789",
            "DRIP_PUBLIC_URL": "https://drip.test",
            "DRIP_RUNNERS_LAB_URL": "https://lab.test/join",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class WorkerProcess:
    """``celery worker`` in its own process group, so a SIGKILL takes its children too."""

    def __init__(self, env: Mapping[str, str], *, concurrency: int = 2, log: Path) -> None:
        self.env = dict(env)
        self.concurrency = concurrency
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(self.concurrency),
                "--pool",
                "prefork",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
            ],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): no clean shutdown."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._log.close()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        """Stop the worker (SIGTERM, then SIGKILL) and close its log; safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if not self._log.closed:  # also when the worker had exited by itself
            self._log.close()


def client(broker_url: str) -> Celery:
    """A producer-only Celery app to enqueue ``drip.send`` without importing the worker app."""
    app = Celery("drip-test-client", broker=broker_url)
    app.conf.update(
        task_serializer="json", task_default_queue="drip", broker_connection_retry_on_startup=True
    )
    return app


def wait_for(
    predicate: object,
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    log: WorkerProcess | None = None,
) -> None:
    """Poll ``predicate`` (a callable) until it is true: waiting on another process, not time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    tail = f"\n--- worker log ---\n{log.log_tail()}" if log is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")
