"""Test helpers for generator plugin authors: run a generator against a fake order and check the contract.

::

    from delivery_daemon.testing import run_generator

    def test_my_generator():
        result = run_generator(MyGenerator, {"prefix": "X-"}, quantity=3)
        assert all(key.startswith("X-") for key in result.keys)

:func:`run_generator` does what the daemon does: validates the options with the plugin's ``Options`` model (a bad
option raises :class:`~delivery_daemon.errors.ConfigError` with the key path the seller would see), constructs the
plugin (with :class:`~delivery_daemon.generators.resources.Resources` if it asks for them), calls ``generate`` under
the time budget (sync generators in a thread) and checks the result (key count, HTTPS download). Outcomes the generator
raises (OutOfStock, Retry, Dead) propagate so a test can assert them with ``pytest.raises``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import Engine

from delivery_daemon.clock import Clock, ManualClock
from delivery_daemon.config import ProductSettings
from delivery_daemon.generators.contract import (
    Generated,
    Generator,
    OrderContext,
    RevocationContext,
    idempotency_key,
)
from delivery_daemon.generators.resources import ResourceHub, Resources
from delivery_daemon.net.guard import NetPolicy
from delivery_daemon.pipeline.generate import call_generator
from delivery_daemon.pipeline.stores import build_product
from delivery_daemon.storage.engine import create_db_engine, create_schema

FAKE_ORDER: dict[str, Any] = {
    "store": "test-store",
    "marketplace": "softstore",
    "order_id": "order-1",
    "product_id": "product-1",
    "quantity": 1,
    "buyer_email": "buyer@example.com",
}
"""The plausible order :func:`fake_order` and :func:`fake_revocation` describe."""


def fake_order(**fields: Any) -> OrderContext:
    """An OrderContext with plausible values; pass any field to override it."""
    values = {**FAKE_ORDER, **fields}
    values.setdefault("idempotency_key", f"{values['store']}:{values['order_id']}")
    return OrderContext(**values)


def fake_revocation(**fields: Any) -> RevocationContext:
    """A RevocationContext (what a ``revoke`` hook is told) for :func:`fake_order`'s order, its content delivered and
    then refunded; pass any field to override it."""
    values = {**FAKE_ORDER, "keys": ("KEY-1",), "reason": "refunded", "sent": True, **fields}
    values.setdefault("idempotency_key", idempotency_key(values["store"], values["order_id"], values.get("issue", 0)))
    return RevocationContext(**values)


def plugin_database(path: str | Path) -> Engine:
    """A fresh SQLite database at ``path`` with the daemon's schema (for plugins that use ``resources.engine``)."""
    engine = create_db_engine(f"sqlite:///{path}")
    create_schema(engine)
    return engine


def build_generator(
    plugin: Any,
    options: Mapping[str, Any] | None = None,
    *,
    engine: Engine | None = None,
    clock: Clock | None = None,
    store: str = "test-store",
    product_id: str = "product-1",
    policy: NetPolicy | None = None,
) -> Generator:
    """The plugin configured as the daemon would (options validated, Resources passed when asked for).

    ``policy`` is the network policy lent as ``resources.policy``; the default is the daemon's (no private
    addresses), so a test key server on 127.0.0.1 needs ``NetPolicy(allow_private=True)``."""
    name = getattr(plugin, "name", "plugin")
    hub = ResourceHub(clock=clock or ManualClock(), engine=engine, policy=policy or NetPolicy())
    resources = Resources(store=store, product_id=product_id, plugin=name, hub=hub)
    product = build_product(
        ProductSettings(generator=name, options=dict(options or {})),
        {name: plugin},
        f"stores[0].products.{product_id}",
        resources,
    )
    return product.generator


async def arun_generator(
    plugin: Any,
    options: Mapping[str, Any] | None = None,
    *,
    quantity: int = 1,
    order: OrderContext | None = None,
    budget: float = 10.0,
    engine: Engine | None = None,
    clock: Clock | None = None,
    policy: NetPolicy | None = None,
) -> Generated:
    """Async form of :func:`run_generator` (for tests already running in an event loop)."""
    order = order or fake_order(quantity=quantity)
    generator = build_generator(
        plugin, options, engine=engine, clock=clock, store=order.store, product_id=order.product_id, policy=policy
    )
    return await call_generator(generator, order, budget=budget, name=getattr(plugin, "name", "plugin"))


def run_generator(
    plugin: Any,
    options: Mapping[str, Any] | None = None,
    *,
    quantity: int = 1,
    order: OrderContext | None = None,
    budget: float = 10.0,
    engine: Engine | None = None,
    clock: Clock | None = None,
    policy: NetPolicy | None = None,
) -> Generated:
    """Configure ``plugin`` with ``options``, run it once against ``order`` (default: a fake order of
    ``quantity``) and return its checked result. Raises ConfigError, GeneratorError or the generator's outcome."""

    async def main() -> Generated:
        return await arun_generator(
            plugin, options, quantity=quantity, order=order, budget=budget, engine=engine, clock=clock, policy=policy
        )

    return anyio.run(main)


__all__ = ["arun_generator", "build_generator", "fake_order", "fake_revocation", "plugin_database", "run_generator"]
