"""docs/architecture.svg is what tools/archdiagram.py draws from the code today."""

from __future__ import annotations

from pathlib import Path

from controller.tables import TABLES
from tools import archdiagram


def test_the_committed_diagram_is_the_one_the_code_gives() -> None:
    assert archdiagram.SVG.read_text() == archdiagram.render(), (
        "docs/architecture.svg is stale: run .venv/bin/python -m tools.archdiagram"
    )
    assert archdiagram.main(["--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "architecture.svg"
    stale.write_text(archdiagram.render().replace("node agent", "node daemon"))
    assert archdiagram.main(["--check", "--out", str(stale)]) == 1
    assert archdiagram.main(["--out", str(stale)]) == 0
    assert archdiagram.main(["--check", "--out", str(stale)]) == 0


def test_imports_are_read_from_the_package_files(tmp_path: Path) -> None:
    for package, text in {
        "controller": "import jsonhttp.strict\nfrom nodes.bundle import X\nimport os\n",
        "nodes": "from . import sibling\nfrom agentproto import limits\n",
        "services/counter": "",
    }.items():
        (tmp_path / package).mkdir(parents=True)
        (tmp_path / package / "a.py").write_text(text)
    (tmp_path / "services" / "counter" / "manifest.toml").write_text("")
    assert archdiagram.package_imports("controller", tmp_path) == ["jsonhttp", "nodes"]
    assert archdiagram.package_imports("nodes", tmp_path) == ["agentproto"]
    assert archdiagram.shipped_services(tmp_path) == ["counter"]


def test_the_diagram_names_the_tables_and_every_shipped_service() -> None:
    svg = archdiagram.render()
    for name in [*TABLES, *archdiagram.shipped_services()]:
        assert name in svg
