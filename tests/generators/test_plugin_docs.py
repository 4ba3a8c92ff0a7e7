"""docs/plugins.md is the contract: every item (a ``###`` heading under "The contract") is pinned by a test marked
``@pytest.mark.contract("<heading>")``, and every such marker names a documented item (like datasette's check that
every plugin hook is documented and tested)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from delivery_daemon.generators.contract import HOOKS

ROOT = Path(__file__).resolve().parents[2]


def contract_headings() -> list[str]:
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text.split("\n## The contract\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^### (.+)$", section, flags=re.MULTILINE)


def marked_items() -> dict[str, list[str]]:
    """Heading → test functions carrying ``pytest.mark.contract(heading, ...)``, read from the test sources."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or not node.name.startswith("test_"):
                continue
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.contract":
                    for arg in decorator.args:
                        assert isinstance(arg, ast.Constant), f"{path.name}::{node.name}: use string literals"
                        found.setdefault(str(arg.value), []).append(f"{path.name}::{node.name}")
    return found


def test_every_contract_item_has_a_test() -> None:
    """Each ### heading of the contract section has at least one test marked with it."""
    headings = contract_headings()
    assert len(headings) >= 15
    missing = [heading for heading in headings if heading not in marked_items()]
    assert missing == [], f"contract items without a test: {missing}"


def test_every_contract_marker_names_a_documented_item() -> None:
    """No test claims to pin a contract item the document does not have (renamed or removed headings)."""
    stale = sorted(set(marked_items()) - set(contract_headings()))
    assert stale == [], f"tests marked with undocumented contract items: {stale}"


def test_every_hook_the_daemon_looks_for_is_a_documented_item() -> None:
    """Each attribute in contract.HOOKS (what the daemon looks for on a plugin, optional hooks included) has its own
    ### heading, and therefore a test marked with it."""
    missing = [hook for hook in HOOKS if hook not in contract_headings()]
    assert missing == [], f"hooks of generators/contract.py without a contract item in docs/plugins.md: {missing}"
