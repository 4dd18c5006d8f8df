"""The fault suite: a real worker against a SendGrid stand-in that misbehaves on purpose.

Each test sends a course's first lesson to a few hundred subscribers through a real Celery worker
(prefork, Redis broker, PostgreSQL, the official ``sendgrid`` library) while the stand-in answers
late, trickles, hangs, throttles or fails, or while PostgreSQL or Redis goes away (a TCP proxy
cut, like a restart). Then it counts per recipient and message, comparing what the stand-in
accepted with the ``deliveries`` table (:func:`audit`):

- duplicates: an (address, message) the provider accepted more than once: always 0;
- lost: a row the database calls sent that the provider never accepted, or an email the
  provider accepted that the database calls certainly-not-sent: always 0;
- hidden: a row left ``queued`` or ``sending`` (no visible outcome): always 0;
- unknown: rows that maybe went, visible to a person and settled by the provider's events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from drip.clock import FrozenClock
from drip.engine import pause as engine_state
from drip.engine import reconcile
from drip.engine.claim import tick
from drip.esp.memory import MemoryBackend
from drip.ingest.events import Event, EventType, store
from drip.models import Delivery, DeliveryStatus, Subscriber
from drip.runtime import Runtime
from tests.conftest import make_settings, truncate_all
from tests.fakes.sendgrid_sink import SendGridSink
from tests.fakes.tcp_proxy import TcpProxy
from tests.helpers import add_subscriber
from tests.worker_harness import WorkerProcess, client, wait_for, worker_env

pytestmark = [pytest.mark.worker, pytest.mark.postgres, pytest.mark.redis]

RECIPIENTS = 200  # four requests of 50: enough for a fault to land in the middle
TIMEOUT = "2.0"  # DRIP_SENDGRID_TIMEOUT of the worker: a deadline per request


@dataclass(frozen=True)
class Audit:
    sent: int
    unknown: int
    failed: int
    hidden: int  # queued or sending: no visible outcome
    duplicates: int
    lost: int


def audit(rt: Runtime, sink: SendGridSink) -> Audit:
    """Compare the stand-in's acceptances with the deliveries table, per recipient."""
    accepted = sink.acceptance_counts()
    with rt.sessions() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery.message_key, Delivery.status).join(
                Subscriber, Subscriber.id == Delivery.subscriber_id
            )
        ).all()
    statuses = [row.status for row in rows]
    lost = 0
    for email, key, status in rows:
        took = accepted.get((email.lower(), key), 0)
        if status == DeliveryStatus.SENT and took == 0:
            lost += 1  # we say sent, the provider never had it
        if status in (DeliveryStatus.FAILED, DeliveryStatus.QUEUED) and took:
            lost += 1  # the provider has it, we would send it again
    return Audit(
        sent=statuses.count(DeliveryStatus.SENT),
        unknown=statuses.count(DeliveryStatus.UNKNOWN),
        failed=statuses.count(DeliveryStatus.FAILED),
        hidden=statuses.count(DeliveryStatus.QUEUED) + statuses.count(DeliveryStatus.SENDING),
        duplicates=sum(n - 1 for n in accepted.values() if n > 1),
        lost=lost,
    )


@pytest.fixture
def pg_rt(pg_engine: Engine, tmp_path: Path) -> Runtime:
    """The test's side (subscribers, beat's tick) on PostgreSQL, batches of 50 ids."""
    truncate_all(pg_engine)
    clock = FrozenClock(datetime.now(UTC))
    settings = make_settings(tmp_path, send_batch_size=50)
    rt = Runtime.build(settings, engine=pg_engine, backend=MemoryBackend(), clock=clock)
    for i in range(RECIPIENTS):
        add_subscriber(rt, f"runner{i}@example.com", zone="Europe/Berlin")
    return rt


@dataclass
class Scene:
    rt: Runtime
    sink: SendGridSink
    enqueue: Callable[[list[int]], None]

    def count(self, *states: str) -> int:
        with self.rt.sessions() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Delivery).where(Delivery.status.in_(states))
                )
                or 0
            )

    def settled(self) -> bool:
        return self.count(DeliveryStatus.QUEUED, DeliveryStatus.SENDING) == 0


@pytest.fixture
def scene(pg_rt: Runtime, broker: str, sink: SendGridSink) -> Scene:
    app = client(broker)

    def enqueue(ids: list[int]) -> None:
        app.send_task("drip.send", args=[ids], queue="drip")

    return Scene(pg_rt, sink, enqueue)


@pytest.fixture
def start_worker(
    pg_engine: Engine, broker: str, sink: SendGridSink, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(*, database_url: str | None = None, broker_url: str | None = None) -> WorkerProcess:
        env = worker_env(
            database_url=database_url or pg_engine.url.render_as_string(hide_password=False),
            broker_url=broker_url or broker,
            sendgrid_url=sink.url,
            extra={"DRIP_SENDGRID_TIMEOUT": TIMEOUT, "DRIP_REDIS_URL": broker},
        )
        worker = WorkerProcess(env, log=tmp_path / f"worker{len(started)}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def send_all(scene: Scene, worker: WorkerProcess, *, timeout: float = 90) -> Audit:
    """Beat's tick once, then wait until no row is queued or in flight."""
    report = tick(scene.rt, scene.rt.clock(), enqueue=scene.enqueue)
    assert report.claimed == RECIPIENTS
    wait_for(scene.settled, timeout=timeout, what="every delivery settled", log=worker)
    return audit(scene.rt, scene.sink)


def processed_events(scene: Scene) -> list[Event]:
    """SendGrid's ``processed`` event for every acceptance, as its Event Webhook would post."""
    now = scene.rt.clock()
    return [
        Event(
            type=EventType.QUEUED,
            occurred_at=now,
            provider="sendgrid",
            provider_event_id=f"processed-{r.delivery_id}-{i}",
            delivery_id=int(r.delivery_id) if r.delivery_id else None,
            email=r.email,
        )
        for i, r in enumerate(scene.sink.accepted_recipients())
    ]


# --------------------------------------------------------------------------- maybe sent


def test_a_late_answer_leaves_unknown_rows_that_the_providers_events_settle(
    scene: Scene, start_worker: Callable[..., WorkerProcess]
) -> None:
    scene.sink.late(3.0, times=2)  # accepted, answered a second past the deadline
    result = send_all(scene, start_worker())
    assert (result.duplicates, result.lost, result.hidden) == (0, 0, 0)
    assert result.unknown == 100 and result.sent == 100  # two requests of 50 never answered
    assert scene.sink.stats()["accepted"] == 4  # each request reached SendGrid exactly once

    report = store(scene.rt, processed_events(scene))  # SendGrid's word comes in
    assert report.settled == {"sent": 100, "failed": 0}
    settled = audit(scene.rt, scene.sink)
    assert (settled.sent, settled.unknown, settled.duplicates, settled.lost) == (200, 0, 0, 0)


def test_a_trickled_answer_is_cut_at_the_deadline_and_left_unknown(
    scene: Scene, start_worker: Callable[..., WorkerProcess]
) -> None:
    # An answer of ~200 bytes at a byte every half second would hold a send for minutes.
    scene.sink.trickle(0.5, times=1)
    result = send_all(scene, start_worker(), timeout=45)
    assert (result.duplicates, result.lost, result.hidden) == (0, 0, 0)
    assert (result.sent, result.unknown) == (150, 50)


def test_a_hung_request_is_unknown_and_resent_once_on_a_persons_word(
    scene: Scene, start_worker: Callable[..., WorkerProcess]
) -> None:
    scene.sink.hang(accept=False, times=1)  # read, never processed, never answered
    worker = start_worker()
    result = send_all(scene, worker)
    assert (result.duplicates, result.lost, result.hidden) == (0, 0, 0)
    assert (result.sent, result.unknown) == (150, 50)

    with scene.rt.transaction() as session:  # `drip deliveries resend --all-unknown`
        rows = reconcile.waiting_rows(session, DeliveryStatus.UNKNOWN)
        ids = reconcile.resend(session, [r.id for r in rows], scene.rt.clock())
    scene.enqueue(ids)
    wait_for(scene.settled, timeout=60, what="the resent deliveries", log=worker)
    final = audit(scene.rt, scene.sink)
    assert (final.sent, final.unknown, final.duplicates, final.lost) == (200, 0, 0, 0)


# --------------------------------------------------------------------------- throttling


@pytest.mark.parametrize(
    "storm",
    [
        pytest.param({"status": 429, "retry_after": 1}, id="429-retry-after"),
        pytest.param({"status": 429, "reset_in": 1}, id="429-ratelimit-reset"),
        pytest.param({"status": 429}, id="429-no-hint"),
        pytest.param({"status": 500}, id="500"),
        pytest.param({"status": 503, "retry_after": 1}, id="503-retry-after"),
    ],
)
def test_a_storm_of_throttles_delays_sending_and_fails_nothing(
    scene: Scene, start_worker: Callable[..., WorkerProcess], storm: dict[str, int]
) -> None:
    scene.sink.storm(**storm, times=4)  # type: ignore[arg-type]
    result = send_all(scene, start_worker())
    assert result == Audit(sent=RECIPIENTS, unknown=0, failed=0, hidden=0, duplicates=0, lost=0)
    stats = scene.sink.stats()
    assert stats["throttled"] + stats["server_errors"] == 4
    with scene.rt.sessions() as session:
        assert engine_state.paused_reason(session) is None  # throttling is not failure
        attempts = set(session.scalars(select(Delivery.attempts)))
    assert attempts == {1}  # a throttled try uses no attempt


# --------------------------------------------------------------------------- the pause


def test_a_revoked_key_pauses_sending_and_a_valid_one_resumes_it_by_itself(
    scene: Scene, start_worker: Callable[..., WorkerProcess]
) -> None:
    scene.sink.revoke_key()
    worker = start_worker()
    with scene.rt.transaction() as session:  # two refused requests of 50 reach the limit
        engine_state.record_outcome(
            session,
            succeeded=0,
            failed=scene.rt.settings.max_consecutive_failures - 60,
            last_error="401",
            limit=scene.rt.settings.max_consecutive_failures,
            now=scene.rt.clock(),
        )
    tick(scene.rt, scene.rt.clock(), enqueue=scene.enqueue)

    def paused() -> bool:
        with scene.rt.sessions() as session:
            return engine_state.paused_reason(session) is not None

    wait_for(paused, timeout=60, what="sending to pause", log=worker)
    wait_for(lambda: scene.count(DeliveryStatus.SENDING) == 0, timeout=30, what="quiet")
    assert scene.count(DeliveryStatus.QUEUED) == RECIPIENTS  # none failed, none lost
    scene.sink.revoke_key(False)
    # Beat's tick a probe interval later: the probe (GET /v3/scopes) finds the key working.
    probe_after = timedelta(seconds=scene.rt.settings.sending_probe_seconds + 60)
    scene.rt.clock.advance(probe_after)  # type: ignore[attr-defined]
    wait_for(lambda: _probe_tick(scene), timeout=30, what="the probe to resume sending")
    wait_for(scene.settled, timeout=60, what="the waiting emails", log=worker)
    result = audit(scene.rt, scene.sink)
    assert result == Audit(sent=RECIPIENTS, unknown=0, failed=0, hidden=0, duplicates=0, lost=0)


def _probe_tick(scene: Scene) -> bool:
    # The test's runtime talks to the stand-in too, for the probe: as beat's process would.
    from drip.esp.sendgrid import SendGridBackend

    rt = scene.rt
    rt.backend = SendGridBackend("SG.test-key", api_url=scene.sink.url, clock=rt.clock)
    return tick(rt, rt.clock(), enqueue=scene.enqueue).paused is None


# --------------------------------------------------------------------------- our own outages


def test_a_database_restart_mid_send_loses_and_duplicates_nothing(
    scene: Scene, start_worker: Callable[..., WorkerProcess], pg_engine: Engine
) -> None:
    url = pg_engine.url.render_as_string(hide_password=False)
    scene.sink.script_delay(0.8, times=RECIPIENTS)  # requests in flight when the cut comes
    with TcpProxy.for_url(url) as proxy:
        worker = start_worker(database_url=proxy.url_for(url))
        tick(scene.rt, scene.rt.clock(), enqueue=scene.enqueue)
        wait_for(lambda: scene.count(DeliveryStatus.SENT) >= 50, timeout=60, what="first sends")
        proxy.cut(4.0)  # like a PostgreSQL restart taking four seconds
        wait_for(scene.settled, timeout=90, what="every delivery after the restart", log=worker)
    result = audit(scene.rt, scene.sink)
    assert (result.duplicates, result.lost, result.hidden) == (0, 0, 0)
    assert result.sent + result.unknown == RECIPIENTS
    assert result.sent >= RECIPIENTS - 50  # at most a batch caught between commit and answer


def test_a_broker_restart_mid_send_loses_and_duplicates_nothing(
    scene: Scene, start_worker: Callable[..., WorkerProcess], broker: str
) -> None:
    scene.sink.script_delay(0.8, times=RECIPIENTS)
    with TcpProxy.for_url(broker) as proxy:
        worker = start_worker(broker_url=proxy.url_for(broker))
        tick(scene.rt, scene.rt.clock(), enqueue=scene.enqueue)
        wait_for(lambda: scene.count(DeliveryStatus.SENT) >= 50, timeout=60, what="first sends")
        proxy.cut(3.0)  # like a Redis restart
        wait_for(
            lambda: scene.count(DeliveryStatus.SENDING) == 0 and proxy.accepting,
            timeout=60,
            what="the sends in flight to finish",
        )
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            # Celery's Redis transport can exit the worker when the broker goes away while it
            # restores unacknowledged messages (kombu's "Unrecoverable error: 'NoneType' object
            # has no attribute 'hostname'"); the deploy restarts it (compose: restart policy).
            worker = start_worker(broker_url=proxy.url_for(broker))
        # Tasks the broker lost with its connection: beat's stale-queue pass hands them over
        # again (ten minutes later in real time; the clock moves instead of the test waiting).
        later = scene.rt.clock() + timedelta(minutes=11)
        tick(scene.rt, later, enqueue=scene.enqueue)
        wait_for(scene.settled, timeout=90, what="every delivery after the restart", log=worker)
    result = audit(scene.rt, scene.sink)
    assert result == Audit(sent=RECIPIENTS, unknown=0, failed=0, hidden=0, duplicates=0, lost=0)
