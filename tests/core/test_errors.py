"""Every exception class the daemon's own packages define hangs under one root and is drawn in errors.py's tree."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import delivery_daemon_plugins

import delivery_daemon
from delivery_daemon import errors
from delivery_daemon.errors import DeliveryDaemonError

# reference/ is test tooling that plays other systems (marketplaces, chaos runs); its exceptions model those systems
# and never leave them, so the daemon's tree does not cover them.
EXCLUDED = "delivery_daemon.reference"
# Scripts that do their work when imported: the CLI entry and alembic's environment (which needs alembic's context).
SCRIPTS = ("delivery_daemon.__main__", "delivery_daemon.storage.migrations.env")


def _modules(package: ModuleType) -> Iterator[ModuleType]:
    """The package and every module below it, imported, except :data:`SCRIPTS` and those under :data:`EXCLUDED`."""
    yield package
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}."):
        if info.name == EXCLUDED or info.name.startswith(f"{EXCLUDED}.") or info.name in SCRIPTS:
            continue
        yield importlib.import_module(info.name)


def _classes(owner: ModuleType | type, module: str) -> Iterator[type]:
    """Classes defined in ``module`` reachable from ``owner``'s namespace, nested classes included."""
    for value in vars(owner).values():
        if inspect.isclass(value) and value.__module__ == module and value is not owner:
            yield value
            yield from _classes(value, module)


def _all_modules() -> list[ModuleType]:
    """Every module of delivery_daemon (minus reference/ and scripts) and of delivery_daemon_plugins, imported."""
    return [module for package in (delivery_daemon, delivery_daemon_plugins) for module in _modules(package)]


def _exceptions() -> dict[str, type[BaseException]]:
    """Every BaseException subclass defined in :func:`_all_modules`, by dotted path."""
    found: dict[str, type[BaseException]] = {}
    for module in _all_modules():
        for cls in _classes(module, module.__name__):
            if issubclass(cls, BaseException):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


@dataclass(frozen=True)
class Drawn:
    """One line of errors.py's tree: a class, the module it says defines it, and the class drawn above it."""

    name: str
    module: str
    parent: str | None


def _tree() -> dict[str, Drawn]:
    """errors.py's docstring tree (the literal block after ``::``), by class name."""
    block = (errors.__doc__ or "").split("::\n\n", 1)[1].split("\n\n", 1)[0]
    drawn: dict[str, Drawn] = {}
    above: list[str] = []  # above[d] is the last class drawn at depth d
    for line in block.splitlines():
        match = re.match(r"^ {4}((?:[│ ] {3})*)(?:[├└]── )?([A-Z]\w*) +(\S+) +\S", line)
        assert match is not None, f"not a tree line: {line!r}"
        depth = len(match[1]) // 4 + (1 if "──" in line else 0)
        name, module = match[2], match[3]
        assert name not in drawn, f"{name} is drawn twice"
        del above[depth:]
        drawn[name] = Drawn(name, module, above[-1] if above else None)
        above.append(name)
    return drawn


def _module_as_drawn(cls: type) -> str:
    """How the tree names ``cls``'s module: relative to ``delivery_daemon``, else in full."""
    return cls.__module__.removeprefix("delivery_daemon.")


def _local_exception_classes() -> list[str]:
    """``class`` statements inside functions whose bases look like exceptions: the import walk cannot see them."""
    known = {cls.__name__ for cls in _exceptions().values()}
    reference = Path(delivery_daemon.__file__).parent / "reference"
    found: list[str] = []
    for root in (Path(delivery_daemon.__file__).parent, Path(delivery_daemon_plugins.__file__).parent):
        for path in sorted(root.rglob("*.py")):
            if path.is_relative_to(reference):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ClassDef) and any(
                        re.search(r"(Error|Exception|Exit|Warning|Interrupt)$", ast.unparse(base))
                        or ast.unparse(base).rsplit(".", 1)[-1] in known
                        for base in inner.bases
                    ):
                        found.append(f"{path}:{inner.lineno} {inner.name}")
    return found


def test_the_walk_finds_the_known_exceptions() -> None:
    """The walk reaches the plugins and the sub-packages and sees their exceptions, so the checks below bite."""
    walked = {module.__name__ for module in _all_modules()}
    assert {"delivery_daemon_plugins.command", "delivery_daemon.storage.queue", "delivery_daemon.cli.migrate"} <= walked
    assert not any(name.startswith("delivery_daemon.reference") for name in walked)
    names = {cls.__name__ for cls in _exceptions().values()}
    assert {"DeliveryDaemonError", "Retry", "LeaseLost", "BlockedDestination", "VaultError"} <= names


def test_no_exception_class_is_defined_inside_a_function() -> None:
    """Every exception class is at module or class level, where the import walk (and a reader) can find it."""
    assert _local_exception_classes() == []


def test_every_exception_derives_from_the_root() -> None:
    """Each exception class the daemon or its bundled plugins define is a DeliveryDaemonError."""
    strays = sorted(name for name, cls in _exceptions().items() if not issubclass(cls, DeliveryDaemonError))
    assert strays == []


def test_every_exception_is_drawn_in_the_tree() -> None:
    """Each exception class the daemon or its bundled plugins define has a line in errors.py's docstring tree."""
    drawn = _tree()
    missing = sorted(name for name, cls in _exceptions().items() if cls.__name__ not in drawn)
    assert missing == []


def test_the_tree_matches_the_classes() -> None:
    """Each line of the tree names the class's real module and, as the class above it, one of its direct bases."""
    classes = {cls.__name__: cls for cls in _exceptions().values()}
    wrong: list[str] = []
    for line in _tree().values():
        cls = classes.get(line.name)
        if cls is None:
            wrong.append(f"{line.name}: no such exception class")
            continue
        if line.module != _module_as_drawn(cls):
            wrong.append(f"{line.name}: drawn in {line.module}, defined in {cls.__module__}")
        bases = [base.__name__ for base in cls.__bases__]
        if line.parent is not None and line.parent not in bases:
            wrong.append(f"{line.name}: drawn under {line.parent}, derives from {bases}")
    assert wrong == []
