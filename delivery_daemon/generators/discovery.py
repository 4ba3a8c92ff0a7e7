"""Finding generator plugins: the ``delivery_daemon.generators`` entry point group, and single-file plugins in a
configured directory (``plugins: {directory: ...}``).

A single-file plugin is a ``*.py`` file that lists its generator classes in a module-level ``GENERATORS`` list.
Discovery happens once, at the edge (the command line); the result is an explicit mapping handed to the daemon.
Every problem — an import error, a class that does not follow the contract, two plugins with one name — is one
:class:`~delivery_daemon.errors.PluginError` naming the plugin and where it came from, never a traceback.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from delivery_daemon.errors import PluginError

GROUP = "delivery_daemon.generators"


@dataclass(frozen=True)
class PluginInfo:
    """A discovered plugin class and where it came from (``entry point …`` or ``file …``)."""

    name: str
    source: str
    version: str
    plugin: Any

    def options(self) -> list[tuple[str, str, str]]:
        """``(option, type, default or "required")`` for each field of the plugin's Options model."""
        rows = []
        for field_name, field in self.plugin.Options.model_fields.items():
            annotation = field.annotation
            kind = annotation.__name__ if isinstance(annotation, type) else str(annotation)
            kind = kind.replace("typing.", "").replace("pydantic.types.", "")
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            rows.append((field_name, kind, default))
        return rows


def check_plugin(plugin: Any, name: str, source: str) -> None:
    """PluginError unless ``plugin`` is a class following the contract under ``name``."""
    where = f"generator plugin {name!r} ({source})"
    if not inspect.isclass(plugin):
        raise PluginError(f"{where} is not a class")
    if getattr(plugin, "name", None) != name:
        raise PluginError(f"{where}: class attribute name is {getattr(plugin, 'name', None)!r}, expected {name!r}")
    options = getattr(plugin, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, BaseModel)):
        raise PluginError(f"{where}: Options must be a pydantic BaseModel subclass")
    if not callable(getattr(plugin, "generate", None)):
        raise PluginError(f"{where}: has no generate(order) method")


def _add(found: dict[str, PluginInfo], info: PluginInfo) -> None:
    check_plugin(info.plugin, info.name, info.source)
    if info.name in found:
        raise PluginError(f"generator plugin {info.name!r} is provided twice: by {found[info.name].source} "
                          f"and by {info.source}")
    found[info.name] = info


def _from_entry_points() -> Iterable[PluginInfo]:
    for ep in entry_points(group=GROUP):
        try:
            plugin = ep.load()
        except Exception as exc:  # a plugin's import error must not become a traceback
            raise PluginError(f"generator plugin {ep.name!r} ({ep.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from None
        dist = ep.dist
        yield PluginInfo(name=ep.name, source=f"entry point {ep.value}" + (f" ({dist.name})" if dist else ""),
                         version=dist.version if dist else "-", plugin=plugin)


def _from_directory(directory: Path) -> Iterable[PluginInfo]:
    if not directory.is_dir():
        raise PluginError(f"plugins directory {directory} does not exist")
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module_name = f"delivery_daemon_local_plugins.{path.stem}"
        try:
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise PluginError(f"plugin file {path} failed to load: {type(exc).__name__}: {exc}") from None
        classes = getattr(module, "GENERATORS", None)
        if not isinstance(classes, list | tuple) or not classes:
            raise PluginError(f"plugin file {path} must define GENERATORS = [YourGenerator, ...]")
        version = str(getattr(module, "__version__", "-"))
        for plugin in classes:
            name = getattr(plugin, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin file {path}: {plugin!r} has no name")
            yield PluginInfo(name=name, source=f"file {path}", version=version, plugin=plugin)


def discover(directory: str | Path | None = None) -> dict[str, PluginInfo]:
    """Every generator plugin by name: installed entry points, then ``*.py`` files in ``directory`` if given."""
    found: dict[str, PluginInfo] = {}
    for info in _from_entry_points():
        _add(found, info)
    if directory is not None:
        for info in _from_directory(Path(directory)):
            _add(found, info)
    return found
