"""Commands for generator plugins and their data: ``plugins list``, ``stock import|status``, ``keys generate``,
``license verify``. Exit codes as in :mod:`delivery_daemon.cli`: 2 for bad usage or configuration (one line)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
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
from delivery_daemon.storage.stock_pool import StockError, StockPool, read_keys


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


def cmd_stock_import(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if settings.store(args.store) is None:
        raise ConfigError("--store", f"no store named {args.store!r} in {args.config}")
    try:
        keys = read_keys(Path(args.file))
    except StockError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 2
    # The daemon's key (the same sources, in the same order): keys are sealed before they reach the database.
    # Without one yet (the daemon never ran), keys go in plaintext and the daemon seals them at its first start.
    cipher = read_cipher(settings.security, sqlite_path(settings.database.url))
    engine = _database(settings)
    clock = SystemClock()
    try:
        # Legacy plaintext rows first, so de-duplication (by key_hash) sees them; then the file is compacted, as at
        # the daemon's start (which would find nothing left to seal and so never compact).
        seal_at_start(engine, clock, cipher)
        result = StockPool(engine, clock, cipher).import_keys(args.store, args.product, keys)
        # The running daemon (another process) picks the requeued jobs up on its next periodic tick.
        queue = JobQueue(engine, clock)
        try:
            woken = asyncio.run(queue.wake_waiting(args.store, args.product))
        finally:
            queue.close()
    except StockError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(
        f"imported {result.added} keys for {args.store}/{args.product}, skipped {result.duplicates} duplicates;"
        f" {len(woken)} waiting orders requeued"
    )
    if settings.stock_sync.enabled and not args.no_sync:
        _sync_listed_count(settings, args.store, args.product)
    return 0


def _sync_listed_count(settings: Settings, store: str, product: str) -> None:
    """Set the product's listed count on the marketplace now (best effort: the import has succeeded whatever
    happens here, and the running daemon's periodic pass retries within ``stock_sync.interval``)."""
    # Imported when it runs: the stores' machinery and every marketplace type would slow every command's start.
    from delivery_daemon.cli.stock import describe, sync_for_command

    try:
        results = asyncio.run(sync_for_command(settings, stores=[store], product=product, log_level="error"))
    except DeliveryDaemonError as exc:
        print(f"listed count not synced: {exc}")
        return
    for outcome in results:
        print(describe(outcome) + (" (the running daemon retries)" if outcome.outcome == "failed" else ""))


def cmd_stock_status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    engine = _database(settings)
    try:
        levels = StockPool(engine, SystemClock()).levels(args.store)
        waiting = waiting_per_product(engine)
    finally:
        engine.dispose()
    if not levels and not waiting:
        print("no stock imported")
        return 0
    print(f"{'store':<16} {'product':<24} {'remaining':>9} {'issued':>7} {'waiting':>7}")
    rows = {(lv.store, lv.product_id): (lv.available, lv.issued) for lv in levels}
    for store, product in sorted(set(rows) | set(waiting)):
        remaining, issued = rows.get((store, product), (0, 0))
        print(f"{store:<16} {product:<24} {remaining:>9} {issued:>7} {waiting.get((store, product), 0):>7}")
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
    importing = stock.add_parser("import", help="add keys from a text (one per line) or CSV file")
    add_config_option(importing)
    importing.add_argument("--store", required=True)
    importing.add_argument("--product", required=True)
    importing.add_argument(
        "--no-sync", action="store_true", help="do not set the product's listed count on the marketplace now"
    )
    importing.add_argument("file")
    importing.set_defaults(func=cmd_stock_import)
    status = stock.add_parser("status", help="keys remaining and issued, and orders waiting, per product")
    add_config_option(status)
    status.add_argument("--store")
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
