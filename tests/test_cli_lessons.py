"""``drip lessons check``, ``drip lessons preview`` and ``drip demo``'s argument checks.

Commands run in-process through click's CliRunner; ``get_settings`` is cached, so it is cleared
around every invocation, and no DRIP_* variable of the developer's shell reaches a command.
"""

from __future__ import annotations

import email
import re
import shutil
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from drip.cli.main import main
from drip.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
REAL_CONTENT = ROOT / "content" / "lessons"
PROBLEM_LINE = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+): (?P<message>\S.*)$")
# Every email of the shipped content, counted from the folders (4 sequences, 14 emails).
STEMS = sorted(
    f"{path.parent.name}-{int(path.name[:2]):02d}"
    for path in (ROOT / "content" / "lessons").glob("*/[0-9][0-9]-*.md")
)


pytestmark = pytest.mark.usefixtures("clean_env")  # conftest: no DRIP_* from outside


def drip(args: list[str], **env: str) -> Result:
    """``drip *args`` in-process with ``env`` set; the settings cache cleared on both sides."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, args, env=env)
    finally:
        get_settings.cache_clear()


def broken_copy(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the real content with a too-long subject and an unknown variable in lesson 3,
    and an http:// link in upsell 2; returns (content dir, lesson 3, upsell 2)."""
    content = tmp_path / "lessons"
    shutil.copytree(REAL_CONTENT, content)
    lesson = content / "glute-accelerator" / "03-load-through-length.md"
    source = lesson.read_text(encoding="utf-8")
    source = re.sub(
        r'(?m)^subject: ".*"$', 'subject: "' + "Far too long a subject " * 5 + '"', source
    )
    source = source.replace("Hi {{ first_name }},", "Hi {{ frist_name }},", 1)
    lesson.write_text(source, encoding="utf-8")
    upsell = content / "runners-lab-upsell" / "02-whats-inside.md"
    upsell.write_text(
        upsell.read_text(encoding="utf-8").replace(
            "({{ runners_lab_url }})", "(http://insecure.example.com)"
        ),
        encoding="utf-8",
    )
    return content, lesson, upsell


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


# --------------------------------------------------------------------------- lessons check


def test_check_on_the_real_content_passes() -> None:
    result = drip(["lessons", "check"])

    assert result.exit_code == 0, result.output
    assert result.stdout == f"ok: 4 sequences, {len(STEMS)} emails\n"
    assert result.stderr == (  # run from the checkout
        "checking content in ./content/lessons\nchecking forms in ./content/forms\n"
    )


def test_check_in_a_coach_folder_checks_its_content_not_the_packaged_course(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content, _, _ = broken_copy(tmp_path)
    (tmp_path / "content").mkdir()
    content.rename(tmp_path / "content" / "lessons")
    monkeypatch.chdir(tmp_path)

    result = drip(["lessons", "check"])

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "checking content in ./content/lessons"
    assert "content/lessons/glute-accelerator/03-load-through-length.md:" in result.stdout


def test_check_reads_the_content_dir_from_the_environment(tmp_path: Path) -> None:
    content, _, _ = broken_copy(tmp_path)

    assert drip(["lessons", "check"], DRIP_CONTENT_DIR=str(content)).exit_code == 1
    assert drip(["lessons", "check"], DRIP_CONTENT_DIR=str(REAL_CONTENT)).exit_code == 0


def test_check_on_a_broken_copy_prints_path_line_message_and_exits_1(tmp_path: Path) -> None:
    content, lesson, upsell = broken_copy(tmp_path)

    result = drip(["lessons", "check", "--content", str(content)])

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout
    parsed = []
    for line in lines:
        match = PROBLEM_LINE.match(line)
        assert match, f"not path:line: message: {line!r}"
        parsed.append((Path(match["path"]).resolve(), int(match["line"]), match["message"]))
    subject, variable, link = parsed
    assert subject[:2] == (lesson.resolve(), _line_of(lesson, "subject:"))
    assert re.fullmatch(r"subject is \d+ characters; at most 78", subject[2])
    assert variable[:2] == (lesson.resolve(), _line_of(lesson, "frist_name"))
    assert "unknown template variable 'frist_name'" in variable[2]
    assert link[:2] == (upsell.resolve(), _line_of(upsell, "insecure.example.com"))
    assert "https" in link[2]
    assert result.stderr.splitlines()[-1] == "3 problems found"
    assert "ok:" not in result.output


def _edit_lesson_1(content: Path, *, front: str = "", body: str = "") -> Path:
    """Lesson 1 of ``content`` with the line ``front`` added to its front matter and ``body``
    put before its first body line; returns the lesson's path."""
    lesson = content / "glute-accelerator" / "01-beyond-clamshells.md"
    head, fence, rest = lesson.read_text(encoding="utf-8").partition("\n---\n")
    head += f"\n{front}" if front else ""
    lesson.write_text(head + fence + body + rest, encoding="utf-8")
    return lesson


def test_every_problem_of_a_lesson_is_printed_in_one_run(tmp_path: Path) -> None:
    content = tmp_path / "lessons"
    shutil.copytree(REAL_CONTENT, content)
    lesson = _edit_lesson_1(
        content, front="send_hour: 25", body="Hi {{ frist_name }}, see <b>this</b>.\n\n"
    )

    result = drip(["lessons", "check", "--content", str(content)])

    assert result.exit_code == 1
    parsed = [PROBLEM_LINE.match(line) for line in result.stdout.splitlines()]
    assert all(parsed), result.stdout
    found = [(Path(m["path"]).resolve(), int(m["line"]), m["message"]) for m in parsed if m]
    assert [(path, line) for path, line, _ in found] == [
        (lesson.resolve(), _line_of(lesson, "send_hour: 25")),
        (lesson.resolve(), _line_of(lesson, "frist_name")),
        (lesson.resolve(), _line_of(lesson, "frist_name")),
    ]
    field, variable, markdown = (message for _, _, message in found)
    assert field == "send_hour is 25; must be 0..23"
    assert variable.startswith("unknown template variable 'frist_name'")
    assert markdown == "raw HTML '<b>' is not allowed: write Markdown"
    assert result.stderr.splitlines()[-1] == "3 problems found"


def test_a_single_problem_is_counted_in_the_singular(tmp_path: Path) -> None:
    content = tmp_path / "lessons"
    shutil.copytree(REAL_CONTENT, content)
    _edit_lesson_1(content, front="send_minute: 60")

    result = drip(["lessons", "check", "--content", str(content)])

    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1, result.stdout
    assert result.stderr.splitlines()[-1] == "1 problem found"


def test_check_on_a_missing_folder_is_a_problem_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"

    result = drip(["lessons", "check", "--content", str(missing)])

    assert result.exit_code == 1
    assert PROBLEM_LINE.match(result.stdout.splitlines()[0])
    assert "does not exist" in result.stdout


# --------------------------------------------------------------------------- lessons preview


def _parse_eml(path: Path) -> EmailMessage:
    parsed = email.message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_preview_writes_html_txt_and_eml_for_each_email_and_an_index(tmp_path: Path) -> None:
    out = tmp_path / "preview"

    result = drip(["lessons", "preview", "--out", str(out)])

    assert result.exit_code == 0, result.output
    expected = {f"{stem}{ext}" for stem in STEMS for ext in (".html", ".txt", ".eml")}
    assert {p.name for p in out.iterdir()} == expected | {"index.html"}
    assert f"wrote {3 * len(STEMS) + 1} files" in result.stdout
    assert "index.html" in result.stdout
    index = (out / "index.html").read_text(encoding="utf-8")
    for stem in STEMS:
        for ext in (".html", ".txt", ".eml"):
            assert f'href="{stem}{ext}"' in index
            assert (out / f"{stem}{ext}").stat().st_size > 0


def test_preview_files_are_personalized_and_the_eml_is_multipart(tmp_path: Path) -> None:
    out = tmp_path / "preview"
    assert drip(["lessons", "preview", "--out", str(out)]).exit_code == 0

    for stem in STEMS:
        page = (out / f"{stem}.html").read_text(encoding="utf-8")
        text = (out / f"{stem}.txt").read_text(encoding="utf-8")
        mime = _parse_eml(out / f"{stem}.eml")
        assert "%%" not in page + text, stem
        assert "Hi Sam," in text
        assert page.lstrip().startswith("<!DOCTYPE html>")
        assert mime.get_content_type() == "multipart/alternative"
        parts = [p.get_content_type() for p in mime.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        # The default DRIP_PUBLIC_URL is the local dev server: http://127.0.0.1:8000.
        assert mime["List-Unsubscribe"] == "<http://127.0.0.1:8000/unsubscribe/PREVIEW>"
        assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "%%" not in str(mime["Subject"])


def test_preview_uses_the_public_url_for_unsubscribe(tmp_path: Path) -> None:
    out = tmp_path / "preview"

    result = drip(
        ["lessons", "preview", "--out", str(out)], DRIP_PUBLIC_URL="https://news.example.org"
    )

    assert result.exit_code == 0, result.output
    mime = _parse_eml(out / "glute-accelerator-01.eml")
    assert mime["List-Unsubscribe"] == "<https://news.example.org/unsubscribe/PREVIEW>"


def test_preview_refuses_broken_content_without_writing(tmp_path: Path) -> None:
    content, _, _ = broken_copy(tmp_path)
    out = tmp_path / "preview"

    result = drip(["lessons", "preview", "--out", str(out)], DRIP_CONTENT_DIR=str(content))

    assert result.exit_code == 1
    assert "refusing to start" in result.stderr
    assert "frist_name" in result.stderr
    assert not out.exists()


# --------------------------------------------------------------------------- demo arguments


@pytest.mark.parametrize(
    "zones", [["Mars/Olympus_Mons"], ["America/New_York", "Europe/Atlantis"], ["../etc/passwd"]]
)
def test_demo_refuses_an_unknown_time_zone_with_exit_2(tmp_path: Path, zones: list[str]) -> None:
    outbox = tmp_path / "outbox"
    args = ["demo", "--days", "1"]
    for zone in zones:
        args += ["--tz", zone]

    result = drip(args, DRIP_OUTBOX_DIR=str(outbox))

    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "--tz" in result.output
    assert f"unknown IANA time zone {zones[-1]!r}" in result.output
    assert "Traceback" not in result.output
    assert not outbox.exists()
    assert not (tmp_path / "demo.sqlite3").exists()


def test_demo_refuses_a_bad_start_date(tmp_path: Path) -> None:
    result = drip(["demo", "--start", "2026-13-01"], DRIP_OUTBOX_DIR=str(tmp_path / "outbox"))

    assert result.exit_code == 2
    assert "--start" in result.output
    assert not (tmp_path / "outbox").exists()


def test_demo_with_broken_content_keeps_the_previous_outbox(tmp_path: Path) -> None:
    content, _, _ = broken_copy(tmp_path)
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "000001-earlier.eml").write_text("an earlier demo's email")

    result = drip(
        ["demo", "--days", "1"], DRIP_OUTBOX_DIR=str(outbox), DRIP_CONTENT_DIR=str(content)
    )

    assert result.exit_code == 1
    assert "refusing to start" in result.stderr
    assert (outbox / "000001-earlier.eml").read_text() == "an earlier demo's email"
