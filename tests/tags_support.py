"""A runtime whose library holds the real course plus small sequences with ``[[triggers]]`` and
``[[exits]]``, for the tests of tags, manual starts and purchases as events."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from drip.clock import FrozenClock
from drip.esp.memory import MemoryBackend
from drip.models import Enrollment
from drip.runtime import Runtime
from tests.conftest import REPO
from tests.test_content import make_sequence, toml_with
from tests.web_support import web_settings

# slug -> the lines added to a minimal valid sequence.toml (top-level keys before tables).
SEQUENCES: dict[str, tuple[str, ...]] = {
    "five-k": (
        "[[triggers]]",
        'on = "tag_added"',
        'tag = "5k-plan"',
        "[[exits]]",
        'on = "tag_removed"',
        'tag = "5k-plan"',
        "[[exits]]",
        'on = "purchased"',
        'product = "runners-lab"',
    ),
    "comeback": ("[[triggers]]", 'on = "tag_removed"', 'tag = "5k-plan"'),
    "welcome-lab": ("[[triggers]]", 'on = "purchased"', 'product = "runners-lab"'),
    "vip": ("[[triggers]]", 'on = "manual"'),
    "vip-again": ("reentry = true", "[[triggers]]", 'on = "manual"'),
}


COURSE = "glute-accelerator"


def automations_runtime(
    tmp_path: Path, engine: Engine, clock: FrozenClock, **settings: Any
) -> Runtime:
    """The real course and :data:`SEQUENCES` in ``tmp_path/content``, on ``engine``."""
    content = tmp_path / "content"
    if not content.exists():
        # The course alone of the real content (the others' triggers are not these tests'):
        shutil.copytree(REPO / "content" / "lessons" / "glute-accelerator", content / COURSE)
        for slug, lines in SEQUENCES.items():
            make_sequence(content, slug=slug, toml=toml_with(*lines))
    values: dict[str, Any] = {"content_dir": content, "purchase_webhook_secret": None}
    values.update(settings)
    return Runtime.build(
        web_settings(tmp_path, **values),
        engine=engine,
        backend=MemoryBackend(clock=clock),
        clock=clock,
    )


def enrollments(rt: Runtime, sequence: str) -> dict[int, tuple[str, str | None, int]]:
    """``{subscriber id: (status, trigger or stop reason, entry)}`` in ``sequence``."""
    with rt.sessions() as session:
        rows = session.execute(
            select(
                Enrollment.subscriber_id,
                Enrollment.status,
                Enrollment.trigger,
                Enrollment.stop_reason,
                Enrollment.entry,
            ).where(Enrollment.sequence == sequence)
        )
        return {
            row.subscriber_id: (row.status, row.stop_reason or row.trigger, row.entry)
            for row in rows
        }
