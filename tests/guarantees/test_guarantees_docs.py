"""docs/guarantees.md: every guarantee row names a test, and every ``tests/...::name`` it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "guarantees.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?")
CHAOS_TEST = ("tests/guarantees/test_chaos.py", "test_short_chaos_run_keeps_every_promise")
"""What a row's bare "chaos run" stands for (the doc's first row names it in full)."""


def proof_cells() -> list[str]:
    """The last ("proved by") cell of every table row in the doc, header and separator rows left out."""
    cells = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("|") or set(line) <= {"|", "-", " "}:
            continue
        last = line.strip().strip("|").split("|")[-1].strip()
        if last != "proved by":
            cells.append(last)
    return cells


def test_functions(path: Path) -> set[str]:
    """The names of the functions (tests and helpers) defined in the file at ``path``."""
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


test_functions.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def test_every_guarantee_names_a_test_that_exists() -> None:
    """Each row cites a test file (or the chaos run); each cited file exists and each ``::name`` is a test in it."""
    cells = proof_cells()
    assert len(cells) >= 20, "the tables of docs/guarantees.md were not found"
    missing: list[str] = []
    for cell in cells:
        references = [(path, name or None) for path, name in REFERENCE.findall(cell)]
        if "chaos run" in cell:
            references.append(CHAOS_TEST)
        assert references, f"this guarantee names no test: {cell!r}"
        for path, name in references:
            file = ROOT / path
            if not file.is_file():
                missing.append(path)
            elif name is not None and name not in test_functions(file):
                missing.append(f"{path}::{name}")
    assert not missing, f"docs/guarantees.md cites tests that do not exist: {missing}"
