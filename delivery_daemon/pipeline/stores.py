"""Composition: configured stores become running adapters, sinks and configured generators.

``build_stores`` is the one place where settings meet the explicit lists of marketplace types and generator plugins.
It validates everything a delivery will need (adapter settings, generator names and options, templates) and raises
:class:`~delivery_daemon.errors.ConfigError` with the key path, so that ``check-config`` and ``serve`` fail at start
rather than in the middle of a delivery.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError

from delivery_daemon.channels.choice import build_channel
from delivery_daemon.clock import Clock
from delivery_daemon.config import (
    ProductSettings,
    Settings,
    StoreSettings,
    config_error,
    expect,
    one_of,
)
from delivery_daemon.errors import ConfigError, PluginError
from delivery_daemon.generators.contract import Generator
from delivery_daemon.generators.discovery import Plugins
from delivery_daemon.generators.resources import ResourceHub, Resources, SharedPool
from delivery_daemon.generators.threads import HungThreads
from delivery_daemon.marketplaces.base import AdapterContext, Marketplace, MarketplaceType, Sink
from delivery_daemon.net.guard import NetPolicy
from delivery_daemon.pipeline.template import check_template


@dataclass(frozen=True)
class Product:
    """A product ready to fulfil: its generator instance, validated options and template."""

    generator_name: str
    generator: Generator
    options: Mapping[str, Any]
    template: str
    secrets: tuple[str, ...] = ()
    """Option values declared secret (``SecretStr``), for the log redactor."""
    listed_count: int | None = None
    """A fixed stock count to show on the marketplace (``listed_count``), whatever the generator has."""
    threads: HungThreads = field(default_factory=HungThreads, compare=False)
    """The generator's calls still running past their budget (sync generators), bounded per product; shared with
    the product's earlier builds through the daemon's :class:`~delivery_daemon.generators.resources.ResourceHub`."""
    pool: str | None = None
    """The shared stock pool (``pools.<name>``) the product draws on; None when it has its own."""


@dataclass
class Store:
    settings: StoreSettings
    marketplace: Marketplace
    sink: Sink
    products: dict[str, Product] = field(default_factory=dict)
    default: Product | None = None
    channel_secrets: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.settings.name

    def static_secrets(self) -> list[str]:
        """The channel's secrets and every product's secret options (the marketplace's come from ``secrets()``)."""
        found = list(self.channel_secrets)
        for product in [*self.products.values(), *([self.default] if self.default else [])]:
            found.extend(product.secrets)
        return found

    def product(self, product_id: str) -> Product | None:
        return self.products.get(product_id, self.default)

    async def aclose(self) -> None:
        """Close the marketplace's HTTP clients and the channel's, if it keeps any open."""
        await self.marketplace.aclose()
        close = getattr(self.sink, "aclose", None)
        if close is not None:
            await close()


def _instantiate(plugin: Any, options: Any, resources: Resources) -> Any:
    """``plugin(options)``, or ``plugin(options, resources)`` when its constructor asks for ``resources``."""
    try:
        wants = "resources" in inspect.signature(plugin).parameters
    except (TypeError, ValueError):
        wants = False
    return plugin(options, resources=resources) if wants else plugin(options)


def secret_values(value: Any) -> list[str]:
    """Every ``SecretStr``/``SecretBytes`` inside validated plugin options (models, mappings and lists walked)."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, SecretBytes):
        return [value.get_secret_value().decode(errors="replace")]
    if isinstance(value, BaseModel):
        return [s for name in type(value).model_fields for s in secret_values(getattr(value, name))]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in secret_values(item)]
    if isinstance(value, list | tuple | set | frozenset):
        return [s for item in value for s in secret_values(item)]
    return []


def build_product(
    product: ProductSettings, plugins: Mapping[str, Any], path: str, resources: Resources | None = None
) -> Product:
    try:
        info = plugins.get(product.generator)  # imports the plugin now, if it is a lazily loaded entry point
    except PluginError as exc:  # a broken plugin stops the start only when a product uses it
        raise ConfigError(
            f"{path}.generator",
            str(exc),
            "a plugin that loads (delivery-daemon plugins list shows why it does not), or another generator",
        ) from None
    if info is None:
        message = f"unknown generator {product.generator!r}"
        if isinstance(plugins, Plugins) and plugins.broken_files:  # the name may be in a file that did not load
            message += " (" + "; ".join(broken.error for broken in plugins.broken_files) + ")"
        raise ConfigError(
            f"{path}.generator",
            message,
            *one_of(product.generator, sorted(plugins), expect(ProductSettings, "generator")[1]),
        )
    plugin = getattr(info, "plugin", info)
    try:
        options = plugin.Options.model_validate(product.options)
    except ValidationError as exc:
        raise config_error(exc.errors()[0], plugin.Options, f"{path}.options", product.options) from None
    # A plugin may bring its own default text (e.g. a download product has no keys to list).
    template = product.template
    if "template" not in product.model_fields_set and isinstance(getattr(plugin, "template", None), str):
        template = plugin.template
    try:
        check_template(template)
    except ValueError as exc:
        raise ConfigError(f"{path}.template", str(exc), *expect(ProductSettings, "template")) from None
    if product.pool is not None and not getattr(plugin, "draws_on_pool", False):
        raise ConfigError(
            f"{path}.pool",
            f"generator {product.generator} does not take keys from a stock pool",
            "no pool, or generator: stock (a generator with draws_on_pool = True)",
        )
    if resources is None:
        resources = Resources(store="", product_id=None, plugin=product.generator, hub=ResourceHub())
    try:
        generator = _instantiate(plugin, options, resources)
    except Exception as exc:
        raise ConfigError(
            f"{path}.generator",
            f"{product.generator} failed to start: {exc}",
            f"options {product.generator} can start with (see delivery-daemon plugins list)",
            f"options: {expect(plugin.Options)[1]}",
        ) from None
    return Product(
        product.generator,
        generator,
        options.model_dump(),
        template,
        tuple(secret_values(options)),
        product.listed_count,
        resources.hub.hung_threads(resources.store, resources.product_id),
        product.pool,
    )


def _resources(
    settings: Settings, store: StoreSettings, product: ProductSettings, product_id: str | None, hub: ResourceHub
) -> Resources:
    pool = None
    if product.pool is not None:  # known: the settings refuse a product naming an unknown pool
        pool = SharedPool(product.pool, settings.pools[product.pool].low_stock_threshold)
    return Resources(store=store.name, product_id=product_id, plugin=product.generator, hub=hub, pool=pool)


def build_stores(
    settings: Settings,
    marketplaces: Sequence[MarketplaceType],
    plugins: Mapping[str, Any],
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None = None,
    hub: ResourceHub | None = None,
) -> dict[str, Store]:
    """Adapters and products for every configured store, or a ConfigError naming the first bad key.

    ``hub`` carries the services lent to plugins (see :mod:`~delivery_daemon.generators.resources`)."""
    policy = NetPolicy.from_settings(settings.security)
    hub = hub or ResourceHub(clock=clock, policy=policy)
    types = {m.name: m for m in marketplaces}
    stores: dict[str, Store] = {}
    for index, store in enumerate(settings.stores):
        path = f"stores[{index}]"
        kind = types.get(store.marketplace)
        if kind is None:
            raise ConfigError(
                f"{path}.marketplace",
                f"unknown marketplace {store.marketplace!r}",
                *one_of(store.marketplace, sorted(types), expect(StoreSettings, "marketplace")[1]),
            )
        context = AdapterContext(
            store=store, path=path, clock=clock, delivery=settings.delivery, transport=transport, policy=policy
        )
        adapter = kind.create(context)
        channel = build_channel(adapter, context)
        built = Store(settings=store, marketplace=adapter, sink=channel.sink, channel_secrets=channel.secrets)
        for product_id, product in store.products.items():
            built.products[product_id] = build_product(
                product, plugins, f"{path}.products.{product_id}", _resources(settings, store, product, product_id, hub)
            )
        if store.default is not None:
            built.default = build_product(
                store.default, plugins, f"{path}.default", _resources(settings, store, store.default, None, hub)
            )
        stores[store.name] = built
    return stores
