"""The one packaging step pyproject.toml can't declare: the wheel ships the default course and
templates.

They live at the repository's root (``content/lessons/``, ``content/forms/``, ``templates/``),
outside the ``drip`` package, where a checkout and the Docker image read them. setuptools'
package data can't reach outside a package, and ``data-files`` lands somewhere no import can
find; so the build copies the folders into the built package as ``drip/_defaults/lessons/``,
``drip/_defaults/forms/`` and ``drip/_defaults/templates/``, where ``drip.settings`` finds them
when the current directory has none (``packaged_dir``; the forms beside the lessons).
Everything else is in pyproject.toml. An editable install skips the copy: it reads them in the
checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DEFAULTS = {
    "lessons": ROOT / "content" / "lessons",
    "forms": ROOT / "content" / "forms",  # beside the lessons, as DRIP_FORMS_DIR's default reads
    "templates": ROOT / "templates",
}
IGNORED = shutil.ignore_patterns(".*", "__pycache__", "*.py[cod]")


class BuildWithDefaults(build_py):
    """``build_py``, then the default course and templates into ``drip/_defaults/``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for name, source in DEFAULTS.items():
            if not (source.is_dir() and any(source.iterdir())):
                raise SystemExit(f"{source} is missing: a drip wheel must ship it (see setup.py)")
            target = Path(self.build_lib) / "drip" / "_defaults" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target, ignore=IGNORED)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            base = Path(self.build_lib) / "drip" / "_defaults"
            outputs += [str(p) for p in sorted(base.rglob("*")) if p.is_file()]
        return outputs


setup(cmdclass={"build_py": BuildWithDefaults})
