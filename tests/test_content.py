"""Tests for drip.content.checks and drip.content.loading: one test per content rule, plus the
real lessons of the repo.

Most broken sequences are built in ``tmp_path`` from a known-good one with a single thing
changed, so each test shows exactly the mistake it is about. A few committed fixtures under
``tests/fixtures/content/`` keep realistic files (and one file that is not UTF-8) on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drip.content.body_rules import STAND_IN, stand_in_text
from drip.content.checks import check_library, check_sequence
from drip.content.loading import load_library, load_sequence
from drip.content.types import (
    PREHEADER_MAX,
    PREHEADER_MIN,
    SUBJECT_MAX,
    TEMPLATE_VARIABLES,
    Sequence,
    sample_context,
)
from drip.errors import ContentError, Problem
from drip.schedule import SendWindow

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "content"
REAL_CONTENT = ROOT / "content" / "lessons"

SEQUENCE_TOML = """\
slug = "demo"
name = "Demo course"
kind = "course"
send_hour = 7
"""

SUBJECT = "A perfectly ordinary subject"
PREHEADER = "A preheader that is comfortably long enough."


def lesson(
    position: object = 1,
    *,
    subject: str = f'"{SUBJECT}"',
    preheader: str = f'"{PREHEADER}"',
    extra: str = "",
    body: str = "Hi {{ first_name }},\n\nWelcome to {{ course_name }}.\n",
) -> str:
    """A lesson file; front matter values are YAML source, so strings carry their quotes."""
    return (
        f"---\nposition: {position}\nsubject: {subject}\npreheader: {preheader}\n{extra}---\n{body}"
    )


def make_sequence(
    root: Path,
    *,
    slug: str = "demo",
    toml: str | None = SEQUENCE_TOML,
    lessons: dict[str, str] | None = None,
) -> Path:
    """A sequence folder ``root/slug``; by default a valid one with two lessons."""
    directory = root / slug
    directory.mkdir(parents=True)
    if toml is not None:
        (directory / "sequence.toml").write_text(toml.replace('"demo"', f'"{slug}"'))
    if lessons is None:
        lessons = {"01-welcome.md": lesson(1), "02-next-step.md": lesson(2)}
    for name, text in lessons.items():
        (directory / name).write_text(text)
    return directory


def problems_in(directory: Path) -> list[tuple[str, int, str]]:
    """``(file name, line, message)`` of every problem, for compact assertions."""
    sequence, problems = check_sequence(directory)
    assert (sequence is None) == bool(problems), "a Sequence exactly when there is no problem"
    return [(Path(p.path).name, p.line, p.message) for p in problems]


def only_problem(directory: Path) -> tuple[str, int, str]:
    found = problems_in(directory)
    assert len(found) == 1, found
    return found[0]


def toml_with(*lines: str, drop: tuple[str, ...] = ()) -> str:
    """SEQUENCE_TOML without the ``drop`` keys, plus ``lines``."""
    kept = [line for line in SEQUENCE_TOML.splitlines() if line.split(" ")[0] not in drop]
    return "\n".join([*kept, *lines]) + "\n"


# --------------------------------------------------------------------------- happy paths


def test_valid_sequence_loads_with_every_field(tmp_path: Path) -> None:
    toml = toml_with(
        "send_minute = 30",
        'send_days = ["mon", "wed"]',
        'first_lesson = "next_send_hour"',
        'on_complete = "after"',
        'category = "glutes-101"',
    )
    directory = make_sequence(
        tmp_path,
        toml=toml,
        lessons={
            "02-next-step.md": lesson(2, extra="send_hour: 18\nsend_minute: 5\n"),
            "01-welcome.md": lesson(1, body="\nHi {{ first_name }}!\n"),
        },
    )
    sequence = load_sequence(directory)
    assert isinstance(sequence, Sequence)
    assert (sequence.slug, sequence.name, sequence.kind) == ("demo", "Demo course", "course")
    assert sequence.window == SendWindow(hour=7, minute=30, days=frozenset({0, 2}))
    assert sequence.first_lesson_immediately is False
    assert sequence.on_complete == "after"
    assert sequence.category == "glutes-101"
    assert sequence.path == directory
    assert sequence.length == 2
    first, second = sequence.lessons
    assert [first.position, second.position] == [1, 2]
    assert first.key == "demo/1" and first.sequence == "demo"
    assert first.slug == "01-welcome" and first.path == directory / "01-welcome.md"
    assert (first.subject, first.preheader) == (SUBJECT, PREHEADER)
    assert first.body == "\nHi {{ first_name }}!\n"
    assert first.body_line == 6  # 4 front matter lines between two fences
    assert (first.send_hour, first.send_minute) == (None, None)
    assert (second.send_hour, second.send_minute) == (18, 5)
    assert sequence.lesson_at(2) is second
    assert sequence.lesson_at(0) is None and sequence.lesson_at(3) is None


def test_sequence_defaults(tmp_path: Path) -> None:
    sequence = load_sequence(make_sequence(tmp_path))
    assert sequence.window == SendWindow(hour=7)
    assert sequence.window.days == frozenset(range(7))
    assert sequence.first_lesson_immediately is True
    assert sequence.on_complete is None
    assert sequence.category == "course"  # defaults to kind


def test_committed_valid_library_loads() -> None:
    library = load_library(FIXTURES / "valid")
    assert sorted(library) == ["mini-course", "mini-upsell"]
    course = library["mini-course"]
    # README.md and notes.txt sit in the folder and are ignored.
    assert [lesson.slug for lesson in course.lessons] == ["01-hello", "02-goodbye"]
    assert course.on_complete == "mini-upsell"
    assert library["mini-upsell"].category == "lab-invite"
    assert check_library(FIXTURES / "valid") == []


def test_sample_context_covers_every_template_variable() -> None:
    context = sample_context("https://lab.example.org/join")
    assert set(context) == TEMPLATE_VARIABLES
    assert context["runners_lab_url"] == "https://lab.example.org/join"
    # Rendered bodies keep their line numbers only if no value spans lines.
    assert not any("\n" in str(value) for value in context.values())


def test_real_content_loads_without_problems() -> None:
    # The repository's own lessons (content/lessons) must always pass every check.
    assert check_library(REAL_CONTENT) == []
    library = load_library(REAL_CONTENT)
    assert library["glute-accelerator"].length >= 7
    assert library["runners-lab-upsell"].length >= 3
    assert library["glute-accelerator"].kind == "course"
    assert library["runners-lab-upsell"].kind == "upsell"


# --------------------------------------------------------------------------- committed fixtures


@pytest.mark.parametrize(
    ("folder", "file", "line", "message"),
    [
        ("bad-toml", "sequence.toml", 3, "not valid TOML: Invalid value"),
        ("no-front-matter", "01-hello.md", 1, "missing front matter"),
        ("raw-html", "01-hello.md", 8, "raw HTML '<b>' is not allowed"),
        ("insecure-link", "01-hello.md", 8, "link 'http://example.com/post' must be an absolute"),
        ("bad-utf8", "01-hello.md", 7, "not valid UTF-8"),
        ("position-gap", "03-later.md", 2, "position 2 is missing (positions must run 1..3"),
    ],
)
def test_committed_broken_fixture(folder: str, file: str, line: int, message: str) -> None:
    ((found_file, found_line, found_message),) = problems_in(FIXTURES / "broken" / folder)
    assert (found_file, found_line) == (file, line)
    assert found_message.startswith(message)


def test_problem_paths_keep_relative_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    _, problems = check_sequence(Path("broken/raw-html"))
    assert [str(p) for p in problems] == [
        "broken/raw-html/01-hello.md:8: raw HTML '<b>' is not allowed: write Markdown"
    ]


def test_problem_str_is_path_line_message() -> None:
    problem = Problem("content/lessons/x/01-a.md", 4, "subject is 91 characters; at most 78")
    assert str(problem) == "content/lessons/x/01-a.md:4: subject is 91 characters; at most 78"


def test_load_sequence_raises_content_error_with_every_problem(tmp_path: Path) -> None:
    directory = make_sequence(
        tmp_path, lessons={"01-a.md": lesson(1, subject='""'), "02-b.md": lesson(2, body="")}
    )
    with pytest.raises(ContentError) as caught:
        load_sequence(directory)
    messages = [(Path(p.path).name, p.message) for p in caught.value.problems]
    assert messages == [("01-a.md", "subject is empty"), ("02-b.md", "body is empty")]
    assert str(caught.value).splitlines() == [str(p) for p in caught.value.problems]


# --------------------------------------------------------------------------- sequence.toml


def test_sequence_toml_missing(tmp_path: Path) -> None:
    assert only_problem(make_sequence(tmp_path, toml=None)) == (
        "sequence.toml",
        1,
        "sequence.toml is missing",
    )


def test_sequence_toml_syntax_error_has_its_line(tmp_path: Path) -> None:
    file, line, message = only_problem(make_sequence(tmp_path, toml=toml_with("send_minute = ")))
    assert (file, line) == ("sequence.toml", 5)
    assert message.startswith("not valid TOML")


def test_sequence_toml_duplicate_key(tmp_path: Path) -> None:
    _, line, message = only_problem(make_sequence(tmp_path, toml=toml_with("send_hour = 8")))
    assert line == 5 and "Cannot overwrite a value" in message


@pytest.mark.parametrize("key", ["slug", "name", "kind", "send_hour"])
def test_sequence_toml_required_key(tmp_path: Path, key: str) -> None:
    file, line, message = only_problem(make_sequence(tmp_path, toml=toml_with(drop=(key,))))
    assert (file, line) == ("sequence.toml", 1)
    assert message.startswith(f"{key} is required")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("name = 3", "name must be a non-empty string, not 3"),
        ('kind = ""', "kind must be a non-empty string, not ''"),
        ('send_hour = "7"', "send_hour must be an integer 0..23, not '7'"),
        ("send_hour = true", "send_hour must be an integer 0..23, not True"),
        ("send_hour = 24", "send_hour is 24; must be 0..23"),
        ("send_minute = 60", "send_minute is 60; must be 0..59"),
        ("send_minute = 1.5", "send_minute must be an integer 0..59, not 1.5"),
        ("on_complete = 3", "on_complete must be a sequence slug, not 3"),
        ('category = "Course Stuff"', "category must match [a-z0-9-]+, not 'Course Stuff'"),
        (f'category = "{"x" * 41}"', "category is 41 characters; at most 40"),
        ("send_minutes = 30", "unknown key 'send_minutes' (known: slug, name, kind,"),
    ],
)
def test_sequence_toml_bad_values(tmp_path: Path, line: str, message: str) -> None:
    key = line.split(" ")[0]
    toml = toml_with(line, drop=(key,))
    file, found_line, found = only_problem(make_sequence(tmp_path, toml=toml))
    assert file == "sequence.toml"
    assert toml.splitlines()[found_line - 1] == line  # points at the offending key
    assert found.startswith(message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["mon", "funday"]', "bad send_days: unknown send day 'funday'"),
        ("[]", "bad send_days: send days must name at least one day"),
        ('"mon"', "send_days must be a list"),
        ("[1, 2]", "send_days must be a list"),
    ],
)
def test_sequence_toml_bad_send_days(tmp_path: Path, value: str, message: str) -> None:
    file, line, found = only_problem(
        make_sequence(tmp_path, toml=toml_with(f"send_days = {value}"))
    )
    assert (file, line) == ("sequence.toml", 5)
    assert found.startswith(message)


@pytest.mark.parametrize("value", ['"tomorrow"', "true"])
def test_sequence_toml_bad_first_lesson(tmp_path: Path, value: str) -> None:
    _, line, message = only_problem(
        make_sequence(tmp_path, toml=toml_with(f"first_lesson = {value}"))
    )
    assert line == 5
    assert message.startswith("first_lesson must be 'immediately' or 'next_send_hour'")


def test_sequence_slug_must_equal_folder(tmp_path: Path) -> None:
    directory = make_sequence(tmp_path, toml=SEQUENCE_TOML.replace('"demo"', '"other"'))
    assert only_problem(directory) == (
        "sequence.toml",
        1,
        "slug 'other' must equal the folder name 'demo'",
    )


def test_kind_that_cannot_be_a_category_needs_explicit_category(tmp_path: Path) -> None:
    toml = toml_with('kind = "Big Course"', drop=("kind",))
    assert only_problem(make_sequence(tmp_path, toml=toml))[2].startswith(
        "kind 'Big Course' is not a valid category"
    )
    fixed = toml_with('kind = "Big Course"', 'category = "big"', drop=("kind",))
    assert load_sequence(make_sequence(tmp_path / "ok", toml=fixed)).category == "big"


def test_sequence_without_lessons(tmp_path: Path) -> None:
    assert only_problem(make_sequence(tmp_path, lessons={})) == (
        "sequence.toml",
        1,
        "no lessons (expected NN-some-slug.md files)",
    )


def test_sequence_toml_not_utf8(tmp_path: Path) -> None:
    directory = make_sequence(tmp_path)
    (directory / "sequence.toml").write_bytes(SEQUENCE_TOML.encode() + b'category = "\xff"\n')
    assert only_problem(directory)[1:] == (5, "not valid UTF-8 (byte 0xff); save it as UTF-8")


def test_missing_sequence_folder(tmp_path: Path) -> None:
    assert problems_in(tmp_path / "nope") == [("nope", 1, "sequence folder does not exist")]


# --------------------------------------------------------------------------- front matter


def one_lesson(tmp_path: Path, text: str, name: str = "01-welcome.md") -> tuple[str, int, str]:
    """The single problem of a sequence whose only lesson file is ``text``."""
    return only_problem(make_sequence(tmp_path, lessons={name: text}))


def test_lesson_without_front_matter(tmp_path: Path) -> None:
    assert one_lesson(tmp_path, "Hi {{ first_name }}\n") == (
        "01-welcome.md",
        1,
        "missing front matter: the file must start with a '---' line",
    )


def test_lesson_with_unterminated_front_matter(tmp_path: Path) -> None:
    assert one_lesson(tmp_path, f"---\nposition: 1\nsubject: {SUBJECT}\nHi\n") == (
        "01-welcome.md",
        1,
        "front matter is never closed: add a '---' line after it",
    )


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("send_hour: 7: 8\n", 5, "mapping values are not allowed here"),
        ("send_hour: @7\n", 5, "found character '@' that cannot start any token"),
        ("send_hour: [7\nsend_minute: 5\n", 6, "expected ',' or ']', but got ':'"),
        ("send_hour: 7\nsend_minute: '\x07'\n", 6, "unacceptable character #x0007"),
    ],
)
def test_front_matter_yaml_error_has_its_line(
    tmp_path: Path, extra: str, line: int, message: str
) -> None:
    file, found_line, found = one_lesson(tmp_path, lesson(1, extra=extra))
    assert (file, found_line) == ("01-welcome.md", line)
    assert found.startswith(f"front matter is not valid YAML: {message}")


def test_front_matter_must_be_a_mapping(tmp_path: Path) -> None:
    text = "---\n- position: 1\n- subject: x\n---\nHi\n"
    assert one_lesson(tmp_path, text) == (
        "01-welcome.md",
        2,
        "front matter must be a mapping of 'key: value' lines",
    )


def test_empty_front_matter_lists_required_fields(tmp_path: Path) -> None:
    found = problems_in(make_sequence(tmp_path, lessons={"01-welcome.md": "---\n---\nHi\n"}))
    assert [message for _, _, message in found] == [
        "position is required (1 for the first lesson)",
        "subject is required",
        "preheader is required (the inbox preview line after the subject)",
    ]


def test_unknown_front_matter_key(tmp_path: Path) -> None:
    assert one_lesson(tmp_path, lesson(1, extra="subjet: Hello\n")) == (
        "01-welcome.md",
        5,
        "unknown front matter key 'subjet' (known: position, subject, preheader, send_hour, "
        "send_minute)",
    )


def test_repeated_front_matter_key(tmp_path: Path) -> None:
    assert one_lesson(tmp_path, lesson(1, extra=f'subject: "{SUBJECT}!"\n')) == (
        "01-welcome.md",
        5,
        "front matter key 'subject' repeats line 3",
    )


@pytest.mark.parametrize("field", ["position", "subject", "preheader"])
def test_required_front_matter_fields(tmp_path: Path, field: str) -> None:
    text = "\n".join(line for line in lesson(1).split("\n") if not line.startswith(field))
    _, line, message = one_lesson(tmp_path, text)
    assert line == 2 and message.startswith(f"{field} is required")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "position must be an integer >= 1, not 0"),
        ("-1", "position must be an integer >= 1, not -1"),
        ('"1"', "position must be an integer >= 1, not '1'"),
        ("1.0", "position must be an integer >= 1, not 1.0"),
        ("true", "position must be an integer >= 1, not True"),
    ],
)
def test_position_must_be_a_positive_integer(tmp_path: Path, value: str, message: str) -> None:
    assert one_lesson(tmp_path, lesson(value)) == ("01-welcome.md", 2, message)


# --------------------------------------------------------------------------- positions and names


def test_positions_must_be_unique(tmp_path: Path) -> None:
    lessons = {"01-a.md": lesson(1), "02-b.md": lesson(2), "02-c.md": lesson(2)}
    found = problems_in(make_sequence(tmp_path, lessons=lessons))
    assert found == [("02-c.md", 2, "position 2 is also used by 02-b.md")]


def test_positions_must_run_from_one_without_gaps(tmp_path: Path) -> None:
    lessons = {"02-b.md": lesson(2), "03-c.md": lesson(3), "05-e.md": lesson(5)}
    assert problems_in(make_sequence(tmp_path, lessons=lessons)) == [
        ("02-b.md", 2, "position 1 is missing (positions must run 1..5 without gaps)"),
        ("05-e.md", 2, "position 4 is missing (positions must run 1..5 without gaps)"),
    ]


def test_a_run_of_missing_positions_is_one_problem(tmp_path: Path) -> None:
    lessons = {"01-a.md": lesson(1), "02-b.md": lesson(2), "100-c.md": lesson(100)}
    assert problems_in(make_sequence(tmp_path, lessons=lessons)) == [
        ("100-c.md", 2, "positions 3..99 are missing (positions must run 1..100 without gaps)")
    ]


def test_broken_position_does_not_also_report_a_gap(tmp_path: Path) -> None:
    lessons = {"01-a.md": lesson(1), "02-b.md": lesson('"two"'), "03-c.md": lesson(3)}
    assert problems_in(make_sequence(tmp_path, lessons=lessons)) == [
        ("02-b.md", 2, "position must be an integer >= 1, not 'two'")
    ]


def test_file_name_prefix_must_match_position(tmp_path: Path) -> None:
    lessons = {"01-a.md": lesson(1), "03-b.md": lesson(2)}
    assert problems_in(make_sequence(tmp_path, lessons=lessons)) == [
        ("03-b.md", 2, "file name starts with 03 but position is 2")
    ]


@pytest.mark.parametrize("name", ["1-welcome.md", "01_welcome.md", "01-Welcome.md", "welcome.md"])
def test_lesson_file_name_pattern(tmp_path: Path, name: str) -> None:
    file, line, message = one_lesson(tmp_path, lesson(1), name=name)
    assert (file, line) == (name, 1)
    assert message.startswith("file name must look like NN-some-slug.md")


def test_other_files_are_ignored(tmp_path: Path) -> None:
    directory = make_sequence(tmp_path)
    (directory / "README.md").write_text("<b>notes</b> for authors, no front matter\n")
    (directory / "notes.txt").write_text("not a lesson\n")
    (directory / "draft.md.bak").write_text("not a lesson\n")
    (directory / ".01-welcome.md.swp").write_bytes(b"\xff\xfe")
    (directory / "images").mkdir()
    (directory / "images" / "01-x.md").write_text("not a lesson either\n")
    assert load_sequence(directory).length == 2


# --------------------------------------------------------------------------- subject, preheader


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f'"{"x" * (SUBJECT_MAX + 13)}"', f"subject is {SUBJECT_MAX + 13} characters; at most 78"),
        ('""', "subject is empty"),
        ('"   "', "subject is empty"),
        ('"Two\\nlines"', "subject must be a single line"),
        ("42", "subject must be a string, not 42"),
    ],
)
def test_subject_rules(tmp_path: Path, value: str, message: str) -> None:
    assert one_lesson(tmp_path, lesson(1, subject=value)) == ("01-welcome.md", 3, message)


def test_subject_at_the_limit_is_fine(tmp_path: Path) -> None:
    directory = make_sequence(
        tmp_path, lessons={"01-a.md": lesson(1, subject=f'"{"é" * SUBJECT_MAX}"')}
    )
    assert load_sequence(directory).lessons[0].subject == "é" * SUBJECT_MAX


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"Too short"', f"preheader is 9 characters; at least {PREHEADER_MIN}"),
        (f'"{"y" * (PREHEADER_MAX + 1)}"', f"preheader is 111 characters; at most {PREHEADER_MAX}"),
        (f'"{"y" * 15}\\n{"z" * 15}"', "preheader must be a single line"),
        ("[a, b]", "preheader must be a string, not ['a', 'b']"),
    ],
)
def test_preheader_rules(tmp_path: Path, value: str, message: str) -> None:
    assert one_lesson(tmp_path, lesson(1, preheader=value)) == ("01-welcome.md", 4, message)


def test_subject_may_use_template_variables(tmp_path: Path) -> None:
    text = lesson(1, subject='"{{ first_name }}, lesson {{ lesson_number }} is here"')
    directory = make_sequence(tmp_path, lessons={"01-a.md": text})
    assert load_sequence(directory).lessons[0].subject.startswith("{{ first_name }}")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"Hi {{ firstname }}"', "subject: unknown template variable 'firstname' (did you mean"),
        ('"Hi {{ first_name"', "subject: template syntax error: "),
        ('"{% if first_name %}Hi{% endif %}"', "subject: statement tag {% if %} is not allowed"),
        ('"Hi {{ first_name.x }}"', "subject: rendering failed: UndefinedError"),
    ],
)
def test_subject_is_checked_as_a_template(tmp_path: Path, value: str, message: str) -> None:
    file, line, found = one_lesson(tmp_path, lesson(1, subject=value))
    assert (file, line) == ("01-welcome.md", 3)
    assert found.startswith(message)


def test_preheader_is_not_a_template(tmp_path: Path) -> None:
    text = lesson(1, preheader='"Lesson {{ lesson_number }} is a short one, promise."')
    assert one_lesson(tmp_path, text) == (
        "01-welcome.md",
        4,
        "preheader is not a template: its braces would be sent as is",
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("send_hour: 24\n", "send_hour is 24; must be 0..23"),
        ("send_hour: -1\n", "send_hour is -1; must be 0..23"),
        ("send_hour: '7'\n", "send_hour must be an integer 0..23, not '7'"),
        ("send_minute: 60\n", "send_minute is 60; must be 0..59"),
        ("send_minute: 7:30\n", "send_minute is 450; must be 0..59"),  # YAML 1.1 base 60!
    ],
)
def test_lesson_send_time_ranges(tmp_path: Path, extra: str, message: str) -> None:
    assert one_lesson(tmp_path, lesson(1, extra=extra)) == ("01-welcome.md", 5, message)


# --------------------------------------------------------------------------- body


@pytest.mark.parametrize("body", ["", "\n", "  \n\n"])
def test_empty_body(tmp_path: Path, body: str) -> None:
    file, line, message = one_lesson(tmp_path, lesson(1, body=body))
    assert (file, message) == ("01-welcome.md", "body is empty")
    assert line in (5, 6)  # the closing fence, or the blank line after it


def test_jinja_syntax_error_has_its_file_line(tmp_path: Path) -> None:
    body = "Hi {{ first_name }},\n\nSee {{ course_name \n"
    file, line, message = one_lesson(tmp_path, lesson(1, body=body))
    assert (file, line) == ("01-welcome.md", 8)  # body line 3; the body starts on line 6
    assert message.startswith("template syntax error: ")


def test_unknown_filter_is_a_syntax_problem(tmp_path: Path) -> None:
    body = "Hi,\n{{ first_name | shout }}\n"
    _, line, message = one_lesson(tmp_path, lesson(1, body=body))
    assert line == 7 and message == "template syntax error: No filter named 'shout'."


def test_unknown_template_variable(tmp_path: Path) -> None:
    body = "Hello,\n\nHi {{ firstname }} and {{ firstname }}, {{ shoe_size }}\n"
    found = problems_in(make_sequence(tmp_path, lessons={"01-a.md": lesson(1, body=body)}))
    known = "course_name, first_name, from_name, lesson_count, lesson_number, runners_lab_url"
    hint = "did you mean 'first_name'? "
    assert found == [
        ("01-a.md", 8, f"unknown template variable 'firstname' ({hint}known: {known})"),
        ("01-a.md", 8, f"unknown template variable 'shoe_size' (known: {known})"),
    ]


@pytest.mark.parametrize(
    ("body", "tag"),
    [
        ("{% if first_name %}Hi{% endif %}\n", "if"),
        ("Hi\n{% set x = 1 %}\n", "set"),
        ("{% for i in [1] %}{{ i }}{% endfor %}\n", "for"),
        ("{% raw %}{{ x }}{% endraw %}\n", "raw"),
        ("{% include 'secret.txt' %}\n", "include"),
    ],
)
def test_statement_tags_are_rejected(tmp_path: Path, body: str, tag: str) -> None:
    file, line, message = one_lesson(tmp_path, lesson(1, body=body))
    assert (file, line) == ("01-welcome.md", 6 + body.split("{%")[0].count("\n"))
    assert message.startswith(f"statement tag {{% {tag} %}} is not allowed")


def test_template_comments_are_allowed(tmp_path: Path) -> None:
    directory = make_sequence(
        tmp_path, lessons={"01-a.md": lesson(1, body="{# note to self #}Hi {{ first_name }}\n")}
    )
    assert load_sequence(directory).length == 1


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("Hi\n\n{{ first_name.nope }}\n", 8, "rendering failed: UndefinedError: "),
        ("Hi\n{{ 1 / 0 }}\n", 7, "rendering failed: ZeroDivisionError: "),
        ("{{ first_name.__class__ }}\n", 6, "rendering failed: SecurityError: "),
    ],
)
def test_rendering_error_is_a_problem(tmp_path: Path, body: str, line: int, message: str) -> None:
    file, found_line, found = one_lesson(tmp_path, lesson(1, body=body))
    assert (file, found_line) == ("01-welcome.md", line)
    assert found.startswith(message)


IMAGE = "https://example.com/squat.png"


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("Hi\n\n<div>\nboxed\n</div>\n", 8, "raw HTML '<div>' is not allowed: write Markdown"),
        ("Hi,\nsome <em>stress</em> here\n", 7, "raw HTML '<em>' is not allowed: write Markdown"),
        (
            f"Hi\n\n![a squat]({IMAGE})\n",
            8,
            f"image '{IMAGE}' is not allowed: lessons are text only",
        ),
    ],
)
def test_raw_html_and_images_are_rejected(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    assert one_lesson(tmp_path, lesson(1, body=body)) == ("01-welcome.md", line, message)


@pytest.mark.parametrize(
    "href",
    [
        "http://example.com",
        "/relative/path",
        "example.com/page",
        "https://",
        "https:///no-host",
        "ftp://example.com/file",
        "javascript:alert(1)",
        "mailto:",
    ],
)
def test_links_must_be_absolute_https(tmp_path: Path, href: str) -> None:
    body = f"Hi,\n\nFirst line\nthen [a link]({href}).\n"
    assert one_lesson(tmp_path, lesson(1, body=body)) == (
        "01-welcome.md",
        9,  # body line 4: softbreaks inside a paragraph are counted
        f"link {href!r} must be an absolute https URL",
    )


def test_autolinks_and_reference_links_are_checked_too(tmp_path: Path) -> None:
    body = "See <http://a.example>.\n\nAnd [b][ref].\n\n[ref]: http://b.example\n"
    found = problems_in(make_sequence(tmp_path, lessons={"01-a.md": lesson(1, body=body)}))
    assert [(line, message) for _, line, message in found] == [
        (6, "link 'http://a.example' must be an absolute https URL"),
        (8, "link 'http://b.example' must be an absolute https URL"),
    ]


def test_good_links_pass(tmp_path: Path) -> None:
    body = (
        "[Join]({{ runners_lab_url }}), [mail](mailto:coach@example.com), "
        "<https://example.com/a?b=c#d>, [x](HTTPS://EXAMPLE.COM)\n"
    )
    directory = make_sequence(tmp_path, lessons={"01-a.md": lesson(1, body=body)})
    assert load_sequence(directory).length == 1


def test_links_are_checked_after_substituting_runners_lab_url(tmp_path: Path) -> None:
    body = "Hi,\n\n[Join the lab]({{ runners_lab_url }})\n"
    directory = make_sequence(tmp_path, lessons={"01-a.md": lesson(1, body=body)})
    assert check_sequence(directory)[1] == []
    sequence, problems = check_sequence(directory, runners_lab_url="http://lab.example")
    assert sequence is None
    assert [(p.line, p.message) for p in problems] == [
        (8, "link 'http://lab.example' must be an absolute https URL")
    ]
    with pytest.raises(ContentError):
        load_library(tmp_path, runners_lab_url="http://lab.example")


def test_lesson_not_utf8_is_a_problem(tmp_path: Path) -> None:
    directory = make_sequence(tmp_path, lessons={})
    (directory / "01-a.md").write_bytes(lesson(1).encode() + b"\n\ncaf\xe9\n")
    assert only_problem(directory) == (
        "01-a.md",
        11,
        "not valid UTF-8 (byte 0xe9); save it as UTF-8",
    )


def test_windows_line_endings_and_bom_are_fine(tmp_path: Path) -> None:
    directory = make_sequence(tmp_path, lessons={})
    text = "\ufeff" + lesson(1, body="Hi,\n\nsee <b>this</b>\n").replace("\n", "\r\n")
    (directory / "01-a.md").write_bytes(text.encode())
    assert only_problem(directory) == (
        "01-a.md",
        8,
        "raw HTML '<b>' is not allowed: write Markdown",
    )
    (directory / "01-a.md").write_bytes(
        ("\ufeff" + lesson(1)).replace("\n", "\r\n").encode("utf-8")
    )
    assert (
        load_sequence(directory).lessons[0].body
        == "Hi {{ first_name }},\n\nWelcome to {{ course_name }}.\n"
    )


def test_every_problem_of_a_lesson_is_reported(tmp_path: Path) -> None:
    text = lesson(
        "0", subject='""', preheader='"short"', extra="color: red\n", body="<i>{{ nme }}</i>\n"
    )
    found = problems_in(make_sequence(tmp_path, lessons={"01-a.md": text}))
    assert [line for _, line, _ in found] == [2, 3, 4, 5, 7, 7]
    assert "unknown template variable 'nme'" in found[-2][2]
    assert found[-1][2] == "raw HTML '<i>' is not allowed: write Markdown"


def test_a_field_a_template_and_a_markdown_problem_are_reported_together(
    tmp_path: Path,
) -> None:
    body = "Hi {{ frist_name }},\n\nsee [the lab](http://lab.example).\n"
    text = lesson(1, extra="send_hour: 24\n", body=body)
    found = problems_in(make_sequence(tmp_path, lessons={"01-a.md": text}))
    assert [(line, message.split(" (")[0]) for _, line, message in found] == [
        (5, "send_hour is 24; must be 0..23"),
        (7, "unknown template variable 'frist_name'"),
        (9, "link 'http://lab.example' must be an absolute https URL"),
    ]


@pytest.mark.parametrize(
    ("body", "template_problem"),
    [
        ("Hi {{ first_name,\n\n<div>\nboxed\n</div>\n", "template syntax error: "),
        ("Hi {{ first_name }\n\n<div>\nboxed\n</div>\n", "template syntax error: "),
        ("{% if first_name %}Hi{% endif %}\n\n<div>\nboxed\n</div>\n", "statement tag {% if %}"),
        ("Hi {{ first_name.nope }}\n\n<div>\nboxed\n</div>\n", "rendering failed: "),
    ],
)
def test_a_template_that_does_not_render_still_gets_its_markdown_checked(
    tmp_path: Path, body: str, template_problem: str
) -> None:
    found = problems_in(make_sequence(tmp_path, lessons={"01-a.md": lesson(1, body=body)}))
    assert len(found) == 2, found
    assert found[0][2].startswith(template_problem)
    assert found[1][1:] == (8, "raw HTML '<div>' is not allowed: write Markdown")


def test_a_link_from_a_bad_expression_is_reported_once(tmp_path: Path) -> None:
    body = "Hi,\n\n[Join]({{ runners_lab_ur }}) or [join]({{ first_name.nope }})\n"
    found = problems_in(make_sequence(tmp_path, lessons={"01-a.md": lesson(1, body=body)}))
    assert [message.split(" (")[0] for _, _, message in found] == [
        "unknown template variable 'runners_lab_ur'"
    ]


def test_links_from_known_variables_are_checked_when_the_template_does_not_render(
    tmp_path: Path,
) -> None:
    body = "Hi {{ nme }},\n\n[Join the lab]({{- runners_lab_url -}})\n"
    directory = make_sequence(tmp_path, lessons={"01-a.md": lesson(1, body=body)})
    _, problems = check_sequence(directory, runners_lab_url="http://lab.example")
    assert [(p.line, p.message.split(" (")[0]) for p in problems] == [
        (6, "unknown template variable 'nme'"),
        (8, "link 'http://lab.example' must be an absolute https URL"),
    ]


def test_the_stand_in_text_keeps_every_line_of_the_source() -> None:
    source = "a {{ first_name }} {{\n nme\n }} {# a\n note #} {% if x %}b\n{{ never closed\n"
    text = stand_in_text(source, "https://lab.example")
    assert text == f"a Sam {STAND_IN}\n\n \n b\n{{{{ never closed\n"
    assert stand_in_text("{{" * 50_000, "https://lab.example") == "{{" * 50_000


# --------------------------------------------------------------------------- library


def test_missing_or_empty_content_dir(tmp_path: Path) -> None:
    assert check_library(tmp_path / "nope") == [
        Problem(str(tmp_path / "nope"), 1, "content directory does not exist")
    ]
    (tmp_path / "empty" / ".git").mkdir(parents=True)
    (tmp_path / "empty" / "empty-folder").mkdir()
    problems = check_library(tmp_path / "empty")
    assert [p.message for p in problems] == ["no sequences (expected <slug>/sequence.toml folders)"]
    with pytest.raises(ContentError):
        load_library(tmp_path / "nope")


def test_library_detects_on_complete_to_a_missing_sequence() -> None:
    with pytest.raises(ContentError) as caught:
        load_library(FIXTURES / "missing-target")
    (problem,) = caught.value.problems
    assert Path(problem.path) == FIXTURES / "missing-target" / "only-course" / "sequence.toml"
    assert problem.line == 5
    assert problem.message.startswith("on_complete 'nowhere' names no sequence")


def test_on_complete_to_an_existing_sequence_loads(tmp_path: Path) -> None:
    make_sequence(tmp_path, slug="course", toml=toml_with('on_complete = "upsell"'))
    make_sequence(tmp_path, slug="upsell")
    library = load_library(tmp_path)
    assert library["course"].on_complete == "upsell"


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ({"a": "a"}, "sequence cycle a -> a"),
        ({"b": "a", "a": "b"}, "sequence cycle a -> b -> a"),
        ({"c": "a", "a": "b", "b": "c", "d": "a"}, "sequence cycle a -> b -> c -> a"),
    ],
)
def test_library_detects_on_complete_cycles(
    tmp_path: Path, links: dict[str, str], message: str
) -> None:
    for slug, target in links.items():
        make_sequence(tmp_path, slug=slug, toml=toml_with(f'on_complete = "{target}"'))
    problems = check_library(tmp_path)
    assert [(Path(p.path).parent.name, p.line, p.message) for p in problems] == [
        ("a", 5, f"{message}: subscribers would never finish")
    ]


def test_library_reports_all_problems_of_all_sequences(tmp_path: Path) -> None:
    make_sequence(tmp_path, slug="one", lessons={"01-a.md": lesson(1, subject='""')})
    make_sequence(tmp_path, slug="two", toml=toml_with('on_complete = "three"'))
    make_sequence(tmp_path, slug="four", toml=None)
    (tmp_path / "assets").mkdir()  # no sequence.toml and no lessons: not a sequence folder
    with pytest.raises(ContentError) as caught:
        load_library(tmp_path)
    found = [
        (Path(p.path).relative_to(tmp_path).as_posix(), p.message) for p in caught.value.problems
    ]
    assert found == [
        ("four/sequence.toml", "sequence.toml is missing"),
        ("one/01-a.md", "subject is empty"),
        ("two/sequence.toml", f"on_complete 'three' names no sequence in {tmp_path}"),
    ]
    assert check_library(tmp_path) == caught.value.problems


def test_on_complete_to_a_broken_sequence_is_not_called_missing(tmp_path: Path) -> None:
    make_sequence(tmp_path, slug="course", toml=toml_with('on_complete = "upsell"'))
    make_sequence(tmp_path, slug="upsell", lessons={"01-a.md": lesson(1, body="")})
    assert [p.message for p in check_library(tmp_path)] == ["body is empty"]


@pytest.mark.parametrize(
    ("toml", "text", "message"),
    [
        (toml_with("x = " + "[" * 3000 + "]" * 3000), lesson(1), "not valid TOML: nested too deep"),
        (SEQUENCE_TOML, lesson(1, extra=f"send_hour: {'[' * 3000}\n"), "front matter is nested"),
        (SEQUENCE_TOML, lesson(1, body="{{ " + "(" * 3000 + " }}\n"), "template expression is"),
    ],
)
def test_pathological_input_is_a_problem_not_a_crash(
    tmp_path: Path, toml: str, text: str, message: str
) -> None:
    assert only_problem(make_sequence(tmp_path, toml=toml, lessons={"01-a.md": text}))[
        2
    ].startswith(message)
