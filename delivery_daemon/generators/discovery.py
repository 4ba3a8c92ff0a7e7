"""Finding generator plugins: the ``delivery_daemon.generators`` entry point group, and single-file plugins in a
configured directory (``plugins: {directory: ...}``).

A single-file plugin is a ``*.py`` file that lists its generator classes in a module-level ``GENERATORS`` list.
Discovery happens once, at the edge (the command line); the result, :class:`Plugins`, is an explicit mapping handed
to the daemon. Entry points are imported lazily, by name, when a product names them; plugin files are imported at
discovery (their names are inside them). A problem with one plugin — an import error, a class that does not follow
the contract, two plugins with one name — marks that plugin broken instead of failing discovery: looking it up
raises its :class:`~delivery_daemon.errors.PluginError` (one line naming the plugin and where it came from, never a
traceback), so it stops start-up only when a product uses it, and ``plugins list`` shows it. A file whose
``GENERATORS`` could not be read is known by its file name (``keylib.py`` → ``keylib``).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
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


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that cannot be used: ``error`` is the one-line reason (the :class:`PluginError` its use raises)."""

    name: str
    source: str
    version: str
    error: str


def _entry_point_source(ep: EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    return f"entry point {ep.value}" + (f" ({dist.name})" if dist else ""), dist.version if dist else "-"


def _load_entry_point(ep: EntryPoint) -> PluginInfo:
    try:
        plugin = ep.load()
    except Exception as exc:  # a plugin's import error must not become a traceback
        raise PluginError(
            f"generator plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from None
    source, version = _entry_point_source(ep)
    check_plugin(plugin, ep.name, source)
    return PluginInfo(name=ep.name, source=source, version=version, plugin=plugin)


class Plugins(Mapping[str, PluginInfo]):
    """Generator plugins by name; an entry point is imported the first time its name is looked up.

    ``plugins[name]`` is the :class:`PluginInfo`, raises :class:`PluginError` when that plugin is broken, and
    ``KeyError`` when no plugin has the name. Iterating gives every name, broken ones included, without importing.
    """

    def __init__(self) -> None:
        self._pending: dict[str, EntryPoint] = {}
        self._loaded: dict[str, PluginInfo] = {}
        self._broken: dict[str, BrokenPlugin] = {}
        self._sources: dict[str, str] = {}  # name -> where it came from, to name both sides of a duplicate
        self.broken_files: list[BrokenPlugin] = []
        """Plugin files that could not be read at all (their plugins' names are unknown)."""

    def _claim(self, name: str, source: str, version: str) -> bool:
        """Register ``name`` from ``source``; False (and the name broken) when another plugin already has it."""
        if name not in self._sources:
            self._sources[name] = source
            return True
        self._pending.pop(name, None)
        self._loaded.pop(name, None)
        self._broken[name] = BrokenPlugin(
            name,
            self._sources[name],
            version,
            f"generator plugin {name!r} is provided twice: by {self._sources[name]} and by {source}",
        )
        return False

    def add_entry_point(self, ep: EntryPoint) -> None:
        source, version = _entry_point_source(ep)
        if self._claim(ep.name, source, version):
            self._pending[ep.name] = ep

    def add_class(self, plugin: Any, name: str, source: str, version: str) -> None:
        if not self._claim(name, source, version):
            return
        try:
            check_plugin(plugin, name, source)
        except PluginError as exc:
            self._broken[name] = BrokenPlugin(name, source, version, str(exc))
            return
        self._loaded[name] = PluginInfo(name=name, source=source, version=version, plugin=plugin)

    def add_broken_file(self, broken: BrokenPlugin) -> None:
        self.broken_files.append(broken)
        # Known by the file's name unless a working plugin already has it: a product naming it gets the reason.
        if broken.name not in self._sources:
            self._sources[broken.name] = broken.source
            self._broken[broken.name] = broken

    def __getitem__(self, name: str) -> PluginInfo:
        if name in self._loaded:
            return self._loaded[name]
        if name in self._broken:
            raise PluginError(self._broken[name].error)
        ep = self._pending.pop(name)  # KeyError: no such plugin
        try:
            info = _load_entry_point(ep)
        except PluginError as exc:
            self._broken[name] = BrokenPlugin(name, *_entry_point_source(ep), error=str(exc))
            raise
        self._loaded[name] = info
        return info

    def __contains__(self, name: object) -> bool:
        return name in self._sources  # without importing

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def listing(self) -> list[PluginInfo | BrokenPlugin]:
        """Every plugin, each imported now, sorted by name: broken ones as :class:`BrokenPlugin` (for ``plugins
        list``), then the plugin files that could not be read under another plugin's name."""
        entries: list[PluginInfo | BrokenPlugin] = []
        for name in sorted(self._sources):
            try:
                entries.append(self[name])
            except PluginError:
                entries.append(self._broken[name])
        entries.extend(broken for broken in self.broken_files if self._broken.get(broken.name) is not broken)
        return entries


def _from_directory(directory: Path, plugins: Plugins) -> None:
    if not directory.is_dir():
        raise PluginError(f"plugins directory {directory} does not exist")
    unreadable: list[BrokenPlugin] = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        source = f"file {path}"
        try:
            module = _import_file(path)
        except PluginError as exc:
            unreadable.append(BrokenPlugin(path.stem, source, "-", str(exc)))
            continue
        version = str(getattr(module, "__version__", "-"))
        classes = getattr(module, "GENERATORS", None)
        if not isinstance(classes, list | tuple) or not classes:
            unreadable.append(
                BrokenPlugin(
                    path.stem, source, version, f"plugin file {path} must define GENERATORS = [YourGenerator, ...]"
                )
            )
            continue
        for plugin in classes:
            name = getattr(plugin, "name", None)
            if not isinstance(name, str) or not name:
                unreadable.append(
                    BrokenPlugin(path.stem, source, version, f"plugin file {path}: {plugin!r} has no name")
                )
                continue
            plugins.add_class(plugin, name, source, version)
    # After every readable file: a file name stands in for the unknown names only where no plugin has it.
    for broken in unreadable:
        plugins.add_broken_file(broken)


def _import_file(path: Path) -> Any:
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
    return module


def discover(directory: str | Path | None = None) -> Plugins:
    """Every generator plugin by name: installed entry points (not imported yet), then ``*.py`` files in
    ``directory`` if given. Only a missing directory fails here; a broken plugin fails when it is used."""
    plugins = Plugins()
    for ep in entry_points(group=GROUP):
        plugins.add_entry_point(ep)
    if directory is not None:
        _from_directory(Path(directory), plugins)
    return plugins
