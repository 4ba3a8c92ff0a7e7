"""Commands for generator plugins and their data: ``plugins list``, ``stock import|move|status``, ``keys generate``,
``license verify``. Exit codes as in :mod:`delivery_daemon.cli`: 2 for bad usage or configuration (one line)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from delivery_daemon.cli.connect import read_cipher
from delivery_daemon.cli.options import add_config_option
from delivery_daemon.clock import SystemClock
from delivery_daemon.config import Settings, load_settings
from delivery_daemon.errors import ConfigError, DeliveryDaemonError, PluginError
from delivery_daemon.generators.discovery import BrokenPlugin, discover
from delivery_daemon.generators.licence import (
    LicenseError,
    generate_keypair,
    load_public_key,
    verify,
    verify_revocations,
)
from delivery_daemon.storage.engine import create_db_engine, create_schema, sqlite_path
from delivery_daemon.storage.queue import JobQueue
from delivery_daemon.storage.reads import waiting_per_product
from delivery_daemon.storage.rekey import seal_at_start
from delivery_daemon.storage.stock_pool import (
    POOL_STORE,
    ImportResult,
    StockError,
    StockPool,
    pool_owner,
    read_keys,
)


def _database(settings: Settings) -> Engine:
    engine = create_db_engine(settings.database)
    create_schema(engine)
    return engine


def cmd_plugins_list(args: argparse.Namespace) -> int:
    """Every plugin, each imported now; a broken one is listed as ``BROKEN`` with its error and makes the exit
    status 1 (it stops ``serve`` only if a product uses it)."""
    directory = args.plugins_dir
    if directory is None and args.config:
        directory = load_settings(args.config).plugins.directory
    broken = 0
    for info in discover(directory).listing():
        if isinstance(info, BrokenPlugin):
            broken += 1
            print(f"{info.name}  {info.version}  ({info.source})  BROKEN\n    {info.error}")
            continue
        print(f"{info.name}  {info.version}  ({info.source})")
        for option, kind, default in info.options():
            print(f"    {option}: {kind} = {default}")
    return 1 if broken else 0


def _import_target(settings: Settings, args: argparse.Namespace) -> tuple[str, str, str | None]:
    """Where ``stock import`` puts the keys: (store, product id, shared pool or None). A product that draws on a
    shared pool has its keys imported into the pool, where its orders take them."""
    if args.pool is not None:
        if args.store is not None or args.product is not None:
            raise ConfigError("--pool", "give either --pool or --store with --product, not both")
        if args.pool not in settings.pools:
            known = ", ".join(sorted(settings.pools)) or "none is configured"
            raise ConfigError("--pool", f"no pool named {args.pool!r} in {args.config} (pools: {known})")
        return *pool_owner(args.pool), args.pool
    if args.store is None or args.product is None:
        raise ConfigError("--store", "give --store with --product, or --pool", example="--store main --product serials")
    if settings.store(args.store) is None:
        raise ConfigError("--store", f"no store named {args.store!r} in {args.config}")
    pool = settings.pool_of(args.store, args.product)
    return (*pool_owner(pool), pool) if pool is not None else (args.store, args.product, None)


def _waiting_on(
    engine: Engine, settings: Settings, store: str, product: str, pool: str | None
) -> list[tuple[str, str]]:
    """The (store, product id) pairs whose waiting orders an import into this target may serve."""
    if pool is None:
        return [(store, product)]
    return sorted(key for key in waiting_per_product(engine) if settings.pool_of(*key) == pool)


def _add_stock(
    settings: Settings, store: str, product: str, pool: str | None, change: Callable[[StockPool], ImportResult]
) -> tuple[ImportResult, int] | None:
    """Run ``change`` (an import or a move into ``(store, product)``) on the pool with the daemon's key, then
    requeue the orders waiting for those keys; (result, orders requeued), or None after printing the error."""
    # The daemon's key (the same sources, in the same order): keys are sealed before they reach the database.
    # Without one yet (the daemon never ran), keys go in plaintext and the daemon seals them at its first start.
    cipher = read_cipher(settings.security, sqlite_path(settings.database.url))
    engine = _database(settings)
    clock = SystemClock()
    try:
        # Legacy plaintext rows first, so de-duplication (by key_hash) sees them; then the file is compacted, as at
        # the daemon's start (which would find nothing left to seal and so never compact).
        seal_at_start(engine, clock, cipher)
        result = change(StockPool(engine, clock, cipher))
        # The running daemon (another process) picks the requeued jobs up on its next periodic tick. A shared
        # pool's keys serve every product drawing on it, in every store: all their waiting orders are woken.
        queue = JobQueue(engine, clock)
        try:
            woken = [
                job
                for key in _waiting_on(engine, settings, store, product, pool)
                for job in asyncio.run(queue.wake_waiting(*key))
            ]
        finally:
            queue.close()
    except StockError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return None
    finally:
        engine.dispose()
    return result, len(woken)


def cmd_stock_import(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    store, product, pool = _import_target(settings, args)
    try:
        keys = read_keys(Path(args.file))
    except StockError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 2
    done = _add_stock(settings, store, product, pool, lambda stock: stock.import_keys(store, product, keys))
    if done is None:
        return 1
    result, woken = done
    where = f"pool {pool}" if pool is not None else f"{store}/{product}"
    if pool is not None and args.pool is None:
        where += f" (drawn on by {args.store}/{args.product})"
    print(
        f"imported {result.added} keys for {where}, skipped {result.duplicates} duplicates;"
        f" {woken} waiting orders requeued"
    )
    if settings.stock_sync.enabled and not args.no_sync:
        _sync_listed_count(settings, [] if pool else [store], None if pool else product, pool)
    return 0


def cmd_stock_move(args: argparse.Namespace) -> int:
    """Move a product's own keys (those nobody holds) into a shared pool: for a product switched to ``pool:``."""
    settings = load_settings(args.config)
    if args.pool not in settings.pools:
        raise ConfigError("--pool", f"no pool named {args.pool!r} in {args.config}")
    target = pool_owner(args.pool)  # any store and product: also one no longer in the configuration
    done = _add_stock(settings, *target, args.pool, lambda stock: stock.move(args.store, args.product, target))
    if done is None:
        return 1
    result, woken = done
    print(
        f"moved {result.added} keys from {args.store}/{args.product} to pool {args.pool}, dropped"
        f" {result.duplicates} already in the pool; {woken} waiting orders requeued"
    )
    if settings.stock_sync.enabled and not args.no_sync:
        _sync_listed_count(settings, [], None, args.pool)
    return 0


def _sync_listed_count(settings: Settings, stores: list[str], product: str | None, pool: str | None) -> None:
    """Set the product's listed count (every listing drawing on ``pool``) on the marketplace now (best effort: the
    import has succeeded whatever happens here, and the running daemon's periodic pass retries within
    ``stock_sync.interval``)."""
    # Imported when it runs: the stores' machinery and every marketplace type would slow every command's start.
    from delivery_daemon.cli.stock import describe, sync_for_command

    try:
        results = asyncio.run(sync_for_command(settings, stores=stores, product=product, pool=pool, log_level="error"))
    except DeliveryDaemonError as exc:
        print(f"listed count not synced: {exc}")
        return
    for outcome in results:
        print(describe(outcome) + (" (the running daemon retries)" if outcome.outcome == "failed" else ""))


def cmd_stock_status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.pool is not None and args.pool not in settings.pools:
        raise ConfigError("--pool", f"no pool named {args.pool!r} in {args.config}")
    engine = _database(settings)
    try:
        levels = StockPool(engine, SystemClock()).levels()
        waiting = waiting_per_product(engine)
    finally:
        engine.dispose()
    own = {(lv.store, lv.product_id): (lv.available, lv.issued) for lv in levels if lv.store != POOL_STORE}
    shared = {lv.product_id: (lv.available, lv.issued) for lv in levels if lv.store == POOL_STORE}
    pools: dict[str, int] = dict.fromkeys([*settings.pools, *shared], 0)
    products: dict[tuple[str, str], int] = {key: 0 for key in own}
    for key, count in waiting.items():
        pool = settings.pool_of(*key)
        if pool is not None:
            pools[pool] = pools.get(pool, 0) + count
        else:
            products[key] = count
    if args.store is not None:
        products = {key: n for key, n in products.items() if key[0] == args.store}
        drawn = {p for p in pools if any(s == args.store for s, _ in settings.pool_products(p))}
        pools = {p: n for p, n in pools.items() if p in drawn}
    if args.pool is not None:
        products, pools = {}, {args.pool: pools.get(args.pool, 0)}
    if not products and not pools:
        print("no stock imported")
        return 0
    if products:
        print(f"{'store':<16} {'product':<24} {'remaining':>9} {'issued':>7} {'waiting':>7}")
        for store, product in sorted(products):
            remaining, issued = own.get((store, product), (0, 0))
            print(f"{store:<16} {product:<24} {remaining:>9} {issued:>7} {products[(store, product)]:>7}")
    if pools:
        if products:
            print()
        print(f"{'pool':<41} {'remaining':>9} {'issued':>7} {'waiting':>7}  drawn on by")
        for name in sorted(pools):
            remaining, issued = shared.get(name, (0, 0))
            users = ", ".join(f"{s}/{p or '(default)'}" for s, p in settings.pool_products(name)) or "-"
            print(f"{name:<41} {remaining:>9} {issued:>7} {pools[name]:>7}  {users}")
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    try:
        generate_keypair(Path(args.private_key), Path(args.public_key))
    except LicenseError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 2
    print(f"private key: {args.private_key} (mode 0600; keep it secret, point signed.private_key_file at it)")
    print(f"public key:  {args.public_key} (ship it with your application to verify licence keys)")
    return 0


def cmd_license_verify(args: argparse.Namespace) -> int:
    try:
        public = load_public_key(args.public_key)
    except LicenseError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 2
    revoked = None
    if args.revocations is not None:
        try:
            revoked = verify_revocations(Path(args.revocations).read_text(encoding="utf-8"), public)
        except OSError as exc:
            print(f"delivery-daemon: error: cannot read {args.revocations}: {exc.strerror}", file=sys.stderr)
            return 2
        except (LicenseError, UnicodeDecodeError) as exc:
            print(f"delivery-daemon: error: --revocations {args.revocations}: {exc}", file=sys.stderr)
            return 2
    try:
        payload = verify(args.key, public, now=time.time())
    except LicenseError as exc:
        print(f"invalid: {exc}")
        return 1
    if revoked is not None and revoked.product != payload.product:
        print(
            f"delivery-daemon: error: --revocations lists product {revoked.product!r}, the key is for "
            f"{payload.product!r}",
            file=sys.stderr,
        )
        return 2
    if revoked is not None and revoked.revokes(args.key):
        print(f"invalid: revoked (on the revocation list issued at {revoked.issued_at})")
        return 1
    print(
        "valid: "
        + json.dumps(
            {
                "product": payload.product,
                "order": payload.order,
                "seat": payload.index,
                "quantity": payload.quantity,
                "issued_at": payload.issued_at,
                "expires_at": payload.expires_at,
            }
        )
    )
    return 0


def register(sub: Any) -> None:
    """Add the plugin-related command groups to the ``delivery-daemon`` parser."""
    plugins = sub.add_parser("plugins", help="generator plugins").add_subparsers(dest="plugins_command", required=True)
    listing = plugins.add_parser("list", help="each plugin's name, version, origin and options")
    add_config_option(listing, required=False, help_text="read plugins.directory from this configuration")
    listing.add_argument("--plugins-dir", help="also load single-file plugins from this directory")
    listing.set_defaults(func=cmd_plugins_list)

    stock = sub.add_parser("stock", help="pre-made keys for the stock generator").add_subparsers(
        dest="stock_command", required=True
    )
    importing = stock.add_parser(
        "import", help="add keys from a text (one per line) or CSV file to a product's pool or a shared pool"
    )
    add_config_option(importing)
    importing.add_argument("--store", help="with --product: the product whose keys these are")
    importing.add_argument("--product")
    importing.add_argument("--pool", help="a shared pool (pools: in the configuration), instead of --store/--product")
    importing.add_argument(
        "--no-sync", action="store_true", help="do not set the listed counts on the marketplaces now"
    )
    importing.add_argument("file")
    importing.set_defaults(func=cmd_stock_import)
    moving = stock.add_parser("move", help="move a product's own unissued keys into a shared pool")
    add_config_option(moving)
    moving.add_argument("--store", required=True)
    moving.add_argument("--product", required=True)
    moving.add_argument("--pool", required=True, help="the shared pool (pools: in the configuration)")
    moving.add_argument("--no-sync", action="store_true", help="do not set the listed counts on the marketplaces now")
    moving.set_defaults(func=cmd_stock_move)
    status = stock.add_parser(
        "status", help="keys remaining and issued, and orders waiting, per product and per shared pool"
    )
    add_config_option(status)
    status.add_argument("--store")
    status.add_argument("--pool", help="only this shared pool")
    status.set_defaults(func=cmd_stock_status)

    keys = sub.add_parser("keys", help="signing keys for the signed generator").add_subparsers(
        dest="keys_command", required=True
    )
    generate = keys.add_parser("generate", help="create an Ed25519 key pair (private key file 0600)")
    generate.add_argument("--private-key", default="license-private.pem")
    generate.add_argument("--public-key", default="license-public.pem")
    generate.set_defaults(func=cmd_keys_generate)

    license_ = sub.add_parser("license", help="signed licence keys").add_subparsers(
        dest="license_command", required=True
    )
    check = license_.add_parser("verify", help="check one licence key offline")
    check.add_argument("key")
    check.add_argument("--public-key", required=True)
    check.add_argument(
        "--revocations",
        metavar="FILE",
        help="a revocation list fetched from GET /revocations/{store}/{product}: a key on it is invalid",
    )
    check.set_defaults(func=cmd_license_verify)


__all__ = ["PluginError", "register"]
