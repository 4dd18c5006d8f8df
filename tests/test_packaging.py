"""The built wheel stands on its own: it ships the default course and templates, and installed
into a fresh virtualenv, ``drip demo`` runs from an empty directory (issue 13).

The wheel is built from a copy of the files a build needs (as the Dockerfile copies them), with
pip: without build isolation when this environment can build it (setuptools >= 68 with
``bdist_wheel``), else in pip's isolated build environment. The fresh venv borrows this one's
installed dependencies through a ``.pth`` line (no download); drip itself comes from the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "drip", "workers")
DEFAULTS = {
    "lessons": ROOT / "content" / "lessons",
    "forms": ROOT / "content" / "forms",
    "templates": ROOT / "templates",
}
JUNK = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", "build", "_defaults")


def _run(
    args: list[str | Path], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIP_", "PYTHON"))}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _builds_here() -> bool:
    """This environment's setuptools can build the wheel without pip's isolated one."""
    try:
        major = int(version("setuptools").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return False
    return major >= 71 or (major >= 68 and find_spec("wheel") is not None)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=JUNK)
        else:
            shutil.copy2(path, source / name)
    for folder in DEFAULTS.values():
        shutil.copytree(folder, source / folder.relative_to(ROOT), ignore=JUNK)
    isolation = ["--no-build-isolation"] if _builds_here() else []
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", "dist", source],
        cwd=work,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [found] = (work / "dist").glob("drip-*.whl")
    return found


@pytest.fixture(scope="module")
def drip_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``drip`` command of a fresh venv with only the wheel installed in it."""
    venv = tmp_path_factory.mktemp("venv")
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    fresh = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv)
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # Plain path lines: the borrowed directory's own .pth files (our editable drip) don't run.
    (Path(fresh.stdout.strip()) / "_borrowed_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        cwd=venv,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    where = _run([python, "-c", "import drip; print(drip.__file__)"], cwd=venv)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # not the checkout's
    return venv / "bin" / "drip"


def test_the_wheel_ships_the_package_the_default_course_and_templates(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("drip", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert path.relative_to(ROOT).as_posix() in names
    for name, folder in DEFAULTS.items():
        files = [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        assert files
        for path in files:
            assert f"drip/_defaults/{name}/{path.relative_to(folder).as_posix()}" in names
    assert not any(n.startswith(("content/", "templates/", "var/")) for n in names)


def test_drip_demo_runs_from_an_empty_directory(drip_bin: Path, tmp_path: Path) -> None:
    result = _run([drip_bin, "demo", "--days", "2", "--start", "2026-03-02"], cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Database: var/demo.sqlite3" in result.stdout
    manifest = tmp_path / "var" / "outbox" / "manifest.jsonl"
    assert len(manifest.read_text(encoding="utf-8").splitlines()) >= 5  # five zones, lesson 1
    emails = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    assert emails and "Glute Accelerator" in emails[0].read_text(encoding="utf-8")
    assert (tmp_path / "var" / "outbox" / "index.html").is_file()
    assert (tmp_path / "var" / "demo.sqlite3").is_file()
    assert not (drip_bin.parent.parent / "lib" / "var").exists()


def test_lessons_check_says_which_content_it_checks(drip_bin: Path, tmp_path: Path) -> None:
    packaged = _run([drip_bin, "lessons", "check"], cwd=tmp_path)
    assert packaged.returncode == 0, packaged.stderr
    folders = [p for p in DEFAULTS["lessons"].iterdir() if (p / "sequence.toml").is_file()]
    emails = sum(len(list(p.glob("[0-9][0-9]-*.md"))) for p in folders)
    assert packaged.stdout == f"ok: {len(folders)} sequences, {emails} emails\n"
    line, forms = packaged.stderr.splitlines()
    assert line.startswith("checking content in /")
    assert line.endswith("/drip/_defaults/lessons (the course packaged with drip)")
    assert forms.endswith("/drip/_defaults/forms")  # the forms beside the packaged lessons

    # The coach's own folder: its content/lessons is checked, not the packaged course.
    shutil.copytree(DEFAULTS["lessons"], tmp_path / "content" / "lessons")
    lesson = tmp_path / "content" / "lessons" / "glute-accelerator" / "02-load-the-foot.md"
    lesson.write_text(lesson.read_text(encoding="utf-8") + "\n{{ frist_name }}\n", "utf-8")
    own = _run([drip_bin, "lessons", "check"], cwd=tmp_path)
    assert own.returncode == 1
    assert own.stderr.splitlines()[0] == "checking content in ./content/lessons"
    assert "content/lessons/glute-accelerator/02-load-the-foot.md:" in own.stdout
    assert "frist_name" in own.stdout


def test_the_dockerfile_copies_what_the_build_needs_before_installing() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    before = text[: text.index("RUN pip install")]
    copied = " ".join(line for line in before.splitlines() if line.startswith("COPY "))
    for name in (*BUILD_INPUTS, "content", "templates"):
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", copied), f"{name} not copied"
