"""The old import paths of modules that the 0.2 layout moved, kept working for one release with a warning.

Plugin authors and sellers' scripts imported the generator contract, the licence format, the resources lent to
plugins, the network guard and the key-line helper from the package's top level. Importing an old path now gives the
module at its new path, the very same object (``isinstance`` and ``except`` keep working), and a
:class:`DeprecationWarning` naming the new path. The aliases go away in 0.3 (docs/plugins.md, "Moved modules").

Hand-written rather than a shim file per old name: a file per alias would put ``generator.py`` beside
``generators/``, names a newcomer would confuse, and each would need its own place in the layer contract.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "delivery_daemon.generator": "delivery_daemon.generators.contract",
    "delivery_daemon.license": "delivery_daemon.generators.licence",
    "delivery_daemon.resources": "delivery_daemon.generators.resources",
    "delivery_daemon.netguard": "delivery_daemon.net.guard",
    "delivery_daemon.cipher": "delivery_daemon.storage.cipher",
}
"""Old module path → new module path."""


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED` and loads each as the module at its new path."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in 0.3", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)  # its attributes are kept: the import system only fills missing ones

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new path is already imported."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (importing :mod:`delivery_daemon` does this)."""
    if not any(isinstance(finder, _Aliases) for finder in sys.meta_path):
        sys.meta_path.append(_Aliases())
