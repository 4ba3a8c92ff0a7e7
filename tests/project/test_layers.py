"""The package's layers (pyproject.toml's ``[tool.importlinter]`` contracts) and no import cycle between modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
from importlinter.api import read_configuration

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "delivery_daemon"


def test_import_linter_contracts_are_kept() -> None:
    """lint-imports (as .ci/run runs it) keeps every contract: each layer imports only the layers below it."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_reference_contract_lists_every_other_top_level_module() -> None:
    """The forbidden contract for ``reference`` names every top-level module but cli, reference and __main__, so
    a new module cannot import the reference marketplaces unnoticed."""
    [contract] = [
        c for c in read_configuration(str(ROOT / "pyproject.toml"))["contracts_options"] if c.get("id") == "reference"
    ]
    graph = grimp.build_graph(PACKAGE)
    expected = graph.find_children(PACKAGE) - {f"{PACKAGE}.cli", f"{PACKAGE}.reference", f"{PACKAGE}.__main__"}
    assert set(contract["source_modules"]) == expected


def test_no_import_cycle() -> None:
    """No module reaches itself through imports, counting imports inside functions and under TYPE_CHECKING."""
    graph = grimp.build_graph(PACKAGE)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None:
                cycles.append(" -> ".join((importer, *back)))
    assert cycles == []
