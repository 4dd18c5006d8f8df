"""Signup forms as content: ``<forms_dir>/<slug>.toml`` checked like lessons (``path:line:
message``), by ``drip lessons check`` and when the runtime is built, and what a form's
``sequence`` adds to the automations index. No database: plain functions and the CLI in-process.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from drip.cli.main import main
from drip.content.forms import (
    BUILTIN_DEFAULT,
    CONFIRM_BUTTON,
    CONFIRM_PREHEADER,
    CONFIRM_SUBJECT,
    ConfirmWording,
    Form,
    check_forms,
    load_forms,
    sequence_slugs,
)
from drip.content.loading import load_library
from drip.content.render import Renderer
from drip.content.triggers import Rule
from drip.errors import ContentError
from drip.runtime import Runtime, automations_for
from drip.settings import get_settings
from tests.conftest import REPO, make_settings

LESSONS = REPO / "content" / "lessons"
FORMS = REPO / "content" / "forms"
SEQUENCES = frozenset({"glute-accelerator", "runners-lab-upsell"})
GOOD = """name = "Race-day checklist"
tags = ["race-day", "lead:magnet"]
sequence = "runners-lab-upsell"
redirect = "https://coach.example/thanks?from=race-day"
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(folder: Path, **kwargs: object) -> list[tuple[str, int, str]]:
    found = check_forms(folder, sequences=SEQUENCES, **kwargs)  # type: ignore[arg-type]
    return [(Path(p.path).name, p.line, p.message) for p in found.problems]


# --------------------------------------------------------------------------- the checks


def test_the_shipped_forms_pass_and_the_default_one_keeps_todays_confirmation() -> None:
    checked = check_forms(FORMS, sequences=sequence_slugs(LESSONS))
    assert checked.problems == []
    assert set(checked.forms) == {"default", "mid-stance"}
    default = checked.forms["default"]
    assert (default.sequence, default.tags, default.redirect) == ("glute-accelerator", (), None)
    assert default.confirm.is_builtin
    assert checked.forms["mid-stance"].tags == ("mid-stance",)
    assert not checked.forms["mid-stance"].confirm.is_builtin


def test_a_good_form_is_read_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "race-day.toml", GOOD)
    form = load_forms(tmp_path, sequences=SEQUENCES)["race-day"]
    assert form == Form(
        slug="race-day",
        name="Race-day checklist",
        tags=("race-day", "lead:magnet"),
        sequence="runners-lab-upsell",
        redirect="https://coach.example/thanks?from=race-day",
        confirm=ConfirmWording(),
        path=path,
    )


def test_without_a_folder_or_a_default_file_the_default_form_is_built_in(tmp_path: Path) -> None:
    assert load_forms(tmp_path / "nowhere", sequences=SEQUENCES) == {"default": BUILTIN_DEFAULT}
    write(tmp_path / "forms", "race-day.toml", GOOD)
    forms = load_forms(tmp_path / "forms", sequences=SEQUENCES)
    assert forms["default"] is BUILTIN_DEFAULT
    assert BUILTIN_DEFAULT.sequence is None and BUILTIN_DEFAULT.tags == ()


def test_a_folder_named_explicitly_must_exist(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nowhere", required=True) == [
        ("nowhere", 1, "forms directory does not exist")
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (GOOD + 'sequnce = "x"\n', 5, "unknown key 'sequnce' (known: name, tags, sequence, "),
        ("name = 3\n", 1, "name must be a non-empty string, not 3"),
        ('name = "' + "n" * 101 + '"\n', 1, "name is 101 characters; at most 100"),
        ('name = "a\\nb"\n', 1, "name must be one line"),
        (
            'name = "x"\ntags = [' + ", ".join(f'"t{i}"' for i in range(21)) + "]\n",
            2,
            "tags holds 21",
        ),
        ('tags = ["race-day"]\n', 1, "name is required"),
        ('name = "x"\n\ntags = "race-day"\n', 3, "tags must be a list like"),
        ('name = "x"\ntags = ["Race Day"]\n', 2, "tags: 'Race Day' is not a tag"),
        ('name = "x"\nsequence = "nope"\n', 2, "sequence 'nope' names no sequence (known: "),
        ('name = "x"\nsequence = "Not A Slug"\n', 2, "sequence must be a sequence slug"),
        ('name = "x"\nredirect = "http://coach.example/"\n', 2, "redirect must be an https://"),
        ('name = "x"\nredirect = 7\n', 2, "redirect must be a non-empty string, not 7"),
        ('name = "x"\nconfirm_subject = "' + "s" * 79 + '"\n', 2, "confirm_subject is 79"),
        ('name = "x"\nconfirm_preheader = "short"\n', 2, "confirm_preheader is 5 characters"),
        ('name = "x"\nconfirm_button = "' + "b" * 41 + '"\n', 2, "confirm_button is 41"),
        ('name = "x"\nconfirm_intro = 5\n', 2, "confirm_intro must be non-empty Markdown"),
        ('name = "x"\ntags = [\n', 2, "not valid TOML"),
    ],
)
def test_each_problem_is_reported_on_its_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    write(tmp_path, "race-day.toml", text)
    [(name, found_line, found)] = problems_of(tmp_path)
    assert (name, found_line) == ("race-day.toml", line)
    assert found.startswith(message), found


def test_the_confirmation_intro_follows_the_lesson_rules_on_the_files_lines(
    tmp_path: Path,
) -> None:
    text = '''name = "x"
confirm_subject = "Hi {{ lesson_number }}"
confirm_intro = """
Hi {{ frist_name }},

Read [this](http://insecure.example) before lesson {{ lesson_count }}.
"""
'''
    write(tmp_path, "race-day.toml", text)
    found = problems_of(tmp_path)
    assert [(line, message.split(":")[0]) for _, line, message in found] == [
        (2, "confirm_subject"),
        (4, "confirm_intro"),
        (6, "confirm_intro"),
        (6, "confirm_intro"),
    ]
    messages = " | ".join(message for _, _, message in found)
    assert "{{ lesson_number }} is for lessons" in messages
    assert "unknown template variable 'frist_name'" in messages
    assert "https" in messages and "{{ lesson_count }} is for lessons" in messages


def test_a_bad_file_name_and_a_stray_file_are_problems(tmp_path: Path) -> None:
    write(tmp_path, "Race Day.toml", GOOD)
    write(tmp_path, "race-day.yaml", "name: x\n")
    write(tmp_path, "README.md", "notes, not a form\n")
    found = problems_of(tmp_path)
    assert [(name, line) for name, line, _ in found] == [
        ("Race Day.toml", 1),
        ("race-day.yaml", 1),
    ]
    assert "'Race Day' is not a slug" in found[0][2]
    assert "a form is a <slug>.toml file" in found[1][2]
    assert check_forms(tmp_path, sequences=SEQUENCES).forms == {"default": BUILTIN_DEFAULT}


def test_every_problem_of_every_file_in_one_run(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", 'name = 1\ntags = "x"\nsequence = "nope"\n')
    write(tmp_path, "b.toml", 'colour = "red"\n')
    found = problems_of(tmp_path)
    assert [(name, line) for name, line, _ in found] == [
        ("a.toml", 1),
        ("a.toml", 2),
        ("a.toml", 3),
        ("b.toml", 1),
        ("b.toml", 1),
    ]
    with pytest.raises(ContentError) as caught:
        load_forms(tmp_path, sequences=SEQUENCES)
    assert len(caught.value.problems) == 5
    # Broken forms still exist: a trigger naming one is not a dangling name too.
    assert check_forms(tmp_path, sequences=SEQUENCES).slugs == {"default", "a", "b"}


def test_the_built_in_wording_is_what_the_confirmation_email_says(tmp_path: Path) -> None:
    message = Renderer(make_settings(tmp_path)).confirmation()
    assert message.subject == CONFIRM_SUBJECT
    assert CONFIRM_PREHEADER in message.html
    assert f">{CONFIRM_BUTTON}</a>" in message.html


# --------------------------------------------------------------------------- the runtime


def test_the_runtime_refuses_a_broken_form_with_path_line_problems(tmp_path: Path) -> None:
    forms = tmp_path / "forms"
    path = write(forms, "race-day.toml", 'name = "x"\nsequence = "nope"\n')
    settings = make_settings(tmp_path, forms_dir=forms)
    with pytest.raises(ContentError) as caught:
        Runtime.build(settings)
    known = ", ".join(sorted(sequence_slugs(LESSONS)))
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:2: sequence 'nope' names no sequence (known: {known})"
    ]


def test_the_runtime_refuses_a_missing_forms_dir_it_was_given(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, forms_dir=tmp_path / "nope")
    with pytest.raises(ContentError, match="forms directory does not exist"):
        Runtime.build(settings)


def test_the_runtime_loads_the_forms_beside_the_lessons_and_passes_their_slugs(
    tmp_path: Path,
) -> None:
    content = tmp_path / "content"
    shutil.copytree(LESSONS, content / "lessons")
    toml = content / "lessons" / "runners-lab-upsell" / "sequence.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8") + '\n[[triggers]]\non = "form"\nform = "race-day"\n',
        encoding="utf-8",
    )
    settings = make_settings(tmp_path, content_dir=content / "lessons")
    assert settings.forms_folder == content / "forms"
    with pytest.raises(ContentError, match="'race-day' names no form"):
        Runtime.build(settings)  # no forms folder yet: only the default form exists

    write(content / "forms", "race-day.toml", 'name = "Race day"\n')
    rt = Runtime.build(settings)
    assert set(rt.forms) == {"default", "race-day"}
    assert [s.slug for s in rt.automations.started_by("form", "race-day")] == ["runners-lab-upsell"]


def test_a_forms_sequence_and_a_form_trigger_are_the_same_and_start_once() -> None:
    library = load_library(LESSONS, forms=("default", "race-day"))
    upsell = library["runners-lab-upsell"]
    library["runners-lab-upsell"] = dataclasses.replace(
        upsell, triggers=(*upsell.triggers, Rule("form", "race-day"))
    )
    both = {"race-day": Form("race-day", "Race day", sequence="runners-lab-upsell")}
    only_form = automations_for(load_library(LESSONS), None, both)
    only_trigger = automations_for(library, None, {"race-day": Form("race-day", "Race day")})
    twice = automations_for(library, None, both)
    for index in (only_form, only_trigger, twice):
        assert [s.slug for s in index.started_by("form", "race-day")] == ["runners-lab-upsell"]


def test_a_default_form_naming_a_sequence_replaces_the_course_fallback() -> None:
    library = load_library(LESSONS)
    course = library["glute-accelerator"]
    library["glute-accelerator"] = dataclasses.replace(course, triggers=())  # names no form
    builtin = automations_for(library, "glute-accelerator", {"default": BUILTIN_DEFAULT})
    named = automations_for(
        library,
        "glute-accelerator",
        {"default": dataclasses.replace(BUILTIN_DEFAULT, sequence="runners-lab-upsell")},
    )
    assert [s.slug for s in builtin.started_by("form", "default")] == ["glute-accelerator"]
    assert [s.slug for s in named.started_by("form", "default")] == ["runners-lab-upsell"]


# --------------------------------------------------------------------------- drip lessons check


def drip(args: list[str], **env: str) -> Result:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(main, args, env=env)
    finally:
        get_settings.cache_clear()


def _content_with_form_trigger(tmp_path: Path, form: str) -> Path:
    """A copy of the real sequences in which the upsell also starts on ``form``."""
    lessons = tmp_path / "content" / "lessons"
    shutil.copytree(LESSONS, lessons)
    toml = lessons / "runners-lab-upsell" / "sequence.toml"
    extra = f'\n[[triggers]]\non = "form"\nform = "{form}"\n'
    toml.write_text(toml.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return lessons


def test_lessons_check_checks_the_forms_and_prints_their_problems(
    tmp_path: Path, clean_env: None
) -> None:
    lessons = _content_with_form_trigger(tmp_path, "race-day")
    forms = tmp_path / "content" / "forms"
    path = write(forms, "race-day.toml", 'name = "Race day"\nsequence = "nope"\ncolour = 1\n')

    result = drip(["lessons", "check", "--content", str(lessons)])

    assert result.exit_code == 1
    assert f"checking forms in {forms}" in result.stderr
    assert result.stdout.splitlines() == [
        f"{path}:2: sequence 'nope' names no sequence (known: "
        + ", ".join(sorted(sequence_slugs(lessons)))
        + ")",
        f"{path}:3: unknown key 'colour' (known: name, tags, sequence, redirect, "
        "confirm_subject, confirm_preheader, confirm_intro, confirm_button)",
    ]  # the broken form still exists: the trigger naming it is no problem of its own
    assert result.stderr.splitlines()[-1] == "2 problems found"


def test_lessons_check_passes_the_form_slugs_to_the_sequence_checks(
    tmp_path: Path, clean_env: None
) -> None:
    lessons = _content_with_form_trigger(tmp_path, "race-day")
    toml = lessons / "runners-lab-upsell" / "sequence.toml"

    missing = drip(["lessons", "check", "--content", str(lessons)])
    assert missing.exit_code == 1
    assert f"{toml}:" in missing.stdout and "'race-day' names no form" in missing.stdout

    write(tmp_path / "content" / "forms", "race-day.toml", 'name = "Race day"\n')
    ok = drip(["lessons", "check", "--content", str(lessons)])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("ok: ")


def test_lessons_check_reads_drip_forms_dir_and_refuses_a_missing_one(
    tmp_path: Path, clean_env: None
) -> None:
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, "race-day.toml", "name = 5\n")
    env = {"DRIP_CONTENT_DIR": str(LESSONS)}

    broken = drip(["lessons", "check"], DRIP_FORMS_DIR=str(elsewhere), **env)
    missing = drip(["lessons", "check", "--forms", str(tmp_path / "nope")], **env)

    assert broken.exit_code == 1 and "race-day.toml:1: name must be" in broken.stdout
    assert missing.exit_code == 1 and "forms directory does not exist" in missing.stdout
    assert drip(["lessons", "check", "--forms", str(FORMS)], **env).exit_code == 0
