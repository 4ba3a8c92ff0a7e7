"""Finding generator plugins: the ``delivery_daemon.generators`` entry point group.

Discovery happens once, at the edge (the command line); the result is an explicit mapping handed to the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from .errors import PluginError

GROUP = "delivery_daemon.generators"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    source: str
    version: str
    plugin: Any


def discover() -> dict[str, PluginInfo]:
    """Every installed generator plugin by name. A plugin that fails to import is a PluginError naming it."""
    found: dict[str, PluginInfo] = {}
    for ep in entry_points(group=GROUP):
        try:
            plugin = ep.load()
        except Exception as exc:  # a plugin's import error must not become a traceback
            raise PluginError(f"generator plugin {ep.name!r} ({ep.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from None
        dist = ep.dist
        found[ep.name] = PluginInfo(
            name=ep.name, source=f"entry point {ep.value}" + (f" ({dist.name})" if dist else ""),
            version=dist.version if dist else "?", plugin=plugin,
        )
    return found
