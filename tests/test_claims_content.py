"""Claim of docs/deploy.md, "Operations" (and the README's "Writing lessons"): content changes
take effect when the processes restart, the web app's included. The web app keeps serving the
lessons it loaded at start, whatever happens to the files, until a new runtime is built.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from drip.runtime import Runtime
from drip.settings import Settings
from tests.conftest import REPO
from tests.dashboard_support import client, dashboard_settings, make_admin, sign_in

LESSON = "glute-accelerator/01-beyond-clamshells.md"
PREVIEW = "/admin/course/glute-accelerator/1/email.html"
PAGE = "/admin/course/glute-accelerator/1"
# Markers without quotes or apostrophes, which the rendering may typeset or escape.
OLD_SUBJECT, NEW_SUBJECT = "Clamshells helped a little.", "Edited while the server runs."
OLD_LINE, NEW_LINE = "start with a confession.", "start with a sentence written after the start."


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    content = tmp_path / "content"
    shutil.copytree(REPO / "content" / "lessons", content)
    return dashboard_settings(tmp_path, content_dir=content)


def _edit_lesson(settings: Settings) -> None:
    path = settings.content_dir / LESSON
    text = path.read_text(encoding="utf-8")
    assert OLD_LINE in text
    assert f'subject: "{OLD_SUBJECT}' in text
    path.write_text(text.replace(OLD_LINE, NEW_LINE).replace(OLD_SUBJECT, NEW_SUBJECT), "utf-8")


def _signed_in(rt: Runtime) -> TestClient:
    http = client(rt)
    assert sign_in(http).status_code == 303
    return http


def test_the_web_app_serves_the_content_it_loaded_until_it_restarts(
    rt: Runtime, settings: Settings
) -> None:
    make_admin(rt)
    running = _signed_in(rt)
    assert OLD_LINE in running.get(PREVIEW).text

    _edit_lesson(settings)
    preview, page = running.get(PREVIEW).text, running.get(PAGE).text
    restarted = _signed_in(Runtime.build(settings, engine=rt.engine, clock=rt.clock))
    new_preview, new_page = restarted.get(PREVIEW).text, restarted.get(PAGE).text

    assert OLD_LINE in preview and NEW_LINE not in preview  # the running app: what it loaded
    assert OLD_SUBJECT in page and NEW_SUBJECT not in page
    assert NEW_LINE in new_preview and OLD_LINE not in new_preview  # a new one: the files
    assert NEW_SUBJECT in new_page and OLD_SUBJECT not in new_page
