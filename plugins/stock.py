"""``stock``: hand out pre-made keys imported with ``delivery-daemon stock import`` (a "serials" product).

Each key goes to exactly one order; the claim is atomic in the database (see
:mod:`delivery_daemon.storage.stock_pool`) and
idempotent per order, so a retried order gets the same keys. With too few keys left the order waits (OutOfStock)
and is delivered after the next import. ``low_stock_threshold`` logs one ``stock.low`` event each time the number of
keys left drops to or below it.

A product configured with ``pool: NAME`` draws on the shared pool ``pools.NAME`` instead of its own: products of
any store naming the same pool take from the same keys, and the pool's ``low_stock_threshold`` applies (the
product's own option is then refused, as it would be ambiguous).

``revoke()`` (the contract's revocation hook): a key that went out and whose order was refunded, disputed or revoked
is marked revoked in the pool and never handed out again; a key taken for an order cancelled before any delivery
attempt goes back to the pool.

``stock_remaining()`` reports the keys left for the configured product (the ``delivery_daemon_stock_remaining``
metric and stock sync read it), or in its shared pool; a store's ``default`` product serves many product ids, so it
is asked with one.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from delivery_daemon.generators.contract import Generated, OrderContext, Resources, RevocationContext


class StockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low_stock_threshold: int | None = Field(default=None, ge=0)


class StockGenerator:
    """Keys from the seller's pool imported for the order's store and product, or from the product's shared pool."""

    name = "stock"
    Options = StockOptions
    draws_on_pool = True
    """A product of this generator may name a shared pool (``pool:``); see :attr:`Resources.pool`."""

    def __init__(self, options: StockOptions, resources: Resources) -> None:
        if resources.pool is not None and options.low_stock_threshold is not None:
            raise ValueError(
                f"low_stock_threshold is the pool's when a product draws on one: set "
                f"pools.{resources.pool.name}.low_stock_threshold instead"
            )
        self.options = options
        self.resources = resources

    def generate(self, order: OrderContext) -> Generated:
        # Sync on purpose: the daemon runs sync generators in a thread, and the pool's SQL is blocking.
        pool = self.resources.pool
        store, product = self.resources.stock_owner(order.store, order.product_id)
        keys = self.resources.stock.claim(
            store,
            product,
            order.idempotency_key,
            order.quantity,
            low_threshold=pool.low_stock_threshold if pool is not None else self.options.low_stock_threshold,
        )
        return Generated(keys=keys)

    def revoke(self, revocation: RevocationContext) -> None:
        # Sync on purpose, like generate: the pool's SQL is blocking.
        pool = self.resources.stock
        if revocation.sent:
            pool.revoke(revocation.store, revocation.product_id, revocation.idempotency_key)
        else:
            pool.release(revocation.store, revocation.product_id, revocation.idempotency_key)

    def stock_remaining(self, product_id: str | None = None) -> int | None:
        """Keys nobody holds for ``product_id`` (default: the configured product) or in the product's shared pool;
        None when there is no product."""
        product = product_id or self.resources.product_id
        if product is None and self.resources.pool is None:
            return None
        return self.resources.stock.available(*self.resources.stock_owner(self.resources.store, product or ""))
