"""Start-up check of the URLs in configuration that the daemon will connect to (outbound webhooks, the ``http``
generator's key server), against the outbound network policy.

A sink or a generator names its URLs with an optional ``destinations() -> {option key: url}``. Each is resolved
now and refused as the connection itself would be (:mod:`~delivery_daemon.net.guard`), so ``check-config`` and
``serve`` fail at once with the key path (exit 2) instead of every order going ``Dead`` later. A name that does not
resolve *now* is only a warning: DNS may be down at start, and the connection is checked again anyway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import httpcore

from delivery_daemon.errors import ConfigError
from delivery_daemon.net.guard import (
    LAN_DOCS,
    OFF_BY_DEFAULT,
    BlockedDestination,
    NetPolicy,
    check_url,
    metadata_note,
    suggested_network,
)
from delivery_daemon.pipeline.stores import Store


def destinations_of(stores: Mapping[str, Store]) -> Iterator[tuple[str, str]]:
    """``(key path, url)`` for every configured URL the daemon will connect to, in configuration order."""
    for index, store in enumerate(stores.values()):
        path = f"stores[{index}]"
        yield from _named(store.sink, f"{path}.delivery.webhook")
        for product_id, product in store.products.items():
            yield from _named(product.generator, f"{path}.products.{product_id}.options")
        if store.default is not None:
            yield from _named(store.default.generator, f"{path}.default.options")


def _named(thing: Any, prefix: str) -> Iterator[tuple[str, str]]:
    named = getattr(thing, "destinations", None)
    if callable(named):
        for key, url in named().items():
            yield f"{prefix}.{key}", url


async def check_destinations(stores: Mapping[str, Store], policy: NetPolicy) -> list[str]:
    """Raise ConfigError naming the key of the first refused URL; return warnings (names that do not resolve)."""
    named = list(destinations_of(stores))
    # Resolved together: with DNS slow or down, start-up waits one resolver timeout, not one per URL.
    outcomes = await asyncio.gather(*(check_url(url, policy) for _path, url in named), return_exceptions=True)
    warnings: list[str] = []
    for (path, _url), outcome in zip(named, outcomes, strict=True):
        if isinstance(outcome, BlockedDestination):
            network = suggested_network(outcome.address) if outcome.address else "192.0.2.0/24"
            raise ConfigError(
                path,
                outcome.what or str(outcome),
                "a public address, or one listed in "
                f"security.allowed_networks ({OFF_BY_DEFAULT}{metadata_note(outcome.address)}; "
                f"{LAN_DOCS})",
                f"security: {{allowed_networks: [{network}]}}",
            ) from None
        if isinstance(outcome, httpcore.ConnectError | OSError):
            warnings.append(f"{path}: not checked now ({outcome})")
        elif isinstance(outcome, BaseException):
            raise outcome
    return warnings
