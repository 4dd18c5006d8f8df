"""docs/architecture.md shows the layers that import-linter enforces, in the same order.

The contract itself runs in `make test` (`lint-imports`); this test keeps the picture of it true:
a layer or package added to one and not the other fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def contract_layers() -> list[set[str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    [layers] = [
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    ]
    return [{name.strip() for name in re.split(r"[:|]", layer)} for layer in layers]


def documented_layers() -> list[set[str]]:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("<!-- layers:", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`" in line]
    return [set(re.findall(r"`([\w.]+)`", row.split("|")[2])) for row in rows]


def test_the_architecture_page_lists_the_enforced_layers_in_order() -> None:
    assert documented_layers() == contract_layers()


def test_the_diagram_names_every_package_of_the_contract() -> None:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    diagram = text.split("```mermaid", 1)[1].split("```", 1)[0]
    for layer in contract_layers():
        for package in layer:
            assert package in diagram, f"{package} is missing from the diagram"


def test_every_drip_package_and_module_is_in_a_layer() -> None:
    layered = set().union(*contract_layers())
    top = {
        f"drip.{path.stem}" if path.is_file() else f"drip.{path.name}"
        for path in (REPO / "drip").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__")
        or (path.is_dir() and (path / "__init__.py").exists())
    }
    top.discard("drip.migrations")  # Alembic's scripts, loaded by drip.migrate
    assert top - layered == set(), "modules outside every layer: add them to the contract"
