"""The import paths the 0.2 layout moved still give the same modules, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from delivery_daemon.moved import MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_is_the_new_module_and_warns(old: str, new: str) -> None:
    """Importing an old path in a fresh interpreter warns once, naming the new path, and gives the very module."""
    probe = (
        f"import warnings; warnings.simplefilter('error')\n"
        f"try:\n    import {old}\nexcept DeprecationWarning as exc:\n    print('warned:', exc)\n"
        f"warnings.simplefilter('ignore'); import {old} as a, {new} as b; print(a is b)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"warned: {old} moved to {new}; the old path goes away in 0.3", "True"]


def test_a_plugin_written_for_the_old_contract_path_still_imports_its_names() -> None:
    """``from delivery_daemon.generator import Generated, OrderContext`` (a 0.1 plugin) gets the current classes."""
    contract = importlib.import_module("delivery_daemon.generators.contract")
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("delivery_daemon.generator", None)
        from delivery_daemon.generator import Generated, OrderContext  # type: ignore[import-not-found]  # the old path
    assert Generated is contract.Generated and OrderContext is contract.OrderContext
