"""What the daemon lends a generator plugin: explicit services handed to ``__init__``, never globals.

A plugin opts in by naming a second constructor parameter ``resources``::

    def __init__(self, options: Options, resources: Resources) -> None: ...

The database is opened after the configuration has been validated (``check-config`` never opens it), so
:attr:`Resources.engine` and :attr:`Resources.stock` are for use in ``generate``, not in ``__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy import Engine

from delivery_daemon.clock import Clock, SystemClock
from delivery_daemon.errors import PluginError
from delivery_daemon.generators.threads import HungThreads
from delivery_daemon.net.guard import NetPolicy
from delivery_daemon.storage.cipher import Cipher
from delivery_daemon.storage.stock_pool import StockPool, pool_owner


@dataclass
class ResourceHub:
    """The daemon's side: one per daemon, filled in as the parts come up (the engine after start-up checks)."""

    clock: Clock = field(default_factory=SystemClock)
    engine: Engine | None = None
    policy: NetPolicy = field(default_factory=NetPolicy)
    """The outbound network policy (``security.allow_private_networks`` / ``allowed_networks``)."""
    cipher: Cipher | None = None
    """The encryption at rest (stock keys are sealed with it); None only for an unencrypted database."""
    hung: dict[str, HungThreads] = field(default_factory=dict)
    """Per product (``store/product``), the sync generator calls still running past their budget. Kept here, not on
    the product, because a reload rebuilds products while those threads run on."""

    def hung_threads(self, store: str, product_id: str | None) -> HungThreads:
        return self.hung.setdefault(f"{store}/{product_id or '*'}", HungThreads())


@dataclass(frozen=True)
class SharedPool:
    """The shared stock pool a product draws on (``pool:`` in its configuration, ``pools.<name>`` its settings)."""

    name: str
    low_stock_threshold: int | None = None


@dataclass(frozen=True)
class Resources:
    """Services for one configured product: ``store``, ``product_id`` (None for a store's default product),
    ``pool`` (the :class:`SharedPool` it draws on, None for its own pool), ``clock``, ``log`` (a structlog logger
    bound to the plugin, store and product), ``engine``, ``stock`` (with :meth:`stock_owner`) and
    ``policy`` (the :class:`~delivery_daemon.net.guard.NetPolicy` for URLs from config)."""

    store: str
    product_id: str | None
    plugin: str
    hub: ResourceHub
    pool: SharedPool | None = None

    @property
    def clock(self) -> Clock:
        return self.hub.clock

    @property
    def policy(self) -> NetPolicy:
        """Pass to :func:`~delivery_daemon.net.guard.guarded_client` for any URL taken from the options."""
        return self.hub.policy

    @property
    def log(self) -> structlog.typing.FilteringBoundLogger:
        logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(f"delivery_daemon.plugin.{self.plugin}")
        return logger.bind(plugin=self.plugin, store=self.store, product_id=self.product_id)

    @property
    def engine(self) -> Engine:
        """The daemon's SQLAlchemy engine; PluginError before the database is open (e.g. in ``check-config``)."""
        if self.hub.engine is None:
            raise PluginError(f"generator {self.plugin}: the database is not open yet")
        return self.hub.engine

    @property
    def stock(self) -> StockPool:
        """The pre-made key pool (``delivery-daemon stock import``) in the daemon's database."""
        return StockPool(self.engine, self.clock, self.hub.cipher)

    def stock_owner(self, store: str, product_id: str) -> tuple[str, str]:
        """The (store, product id) to pass to :attr:`stock` for the product's keys: its shared :attr:`pool`'s when
        it draws on one (the same rows for every store naming the pool), else its own ``(store, product_id)``."""
        return pool_owner(self.pool.name) if self.pool is not None else (store, product_id)
