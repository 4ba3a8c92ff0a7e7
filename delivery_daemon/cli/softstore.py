"""``delivery-daemon softstore connect|test-webhook|sync-stock``: SoftStore seller tooling.

``delivery-daemon softstore connect --config C --store S --public-url URL`` sets the seller's ``api_url`` (where
SoftStore sends paid-order webhooks) through ``POST /seller/profile``, reads it back with ``GET /seller`` and reports
what changed; ``--check`` only compares. The marketplace's validation messages ("Invalid API URL", …) are shown as
one line. "Points at this daemon" means the seller's ``api_url`` ends with ``/webhooks/<store name>``
(:mod:`delivery_daemon.marketplaces.softstore_seller`).

``delivery-daemon softstore test-webhook --config C --store S [--public-url URL]`` sends the webhook SoftStore would
send, signed with the store's ``api_key``, but for an unpaid test order: the daemon answers ``200 {"status":
"ignored"}`` only if the URL reaches it (TLS and proxy included), the store exists and the key matches, and stores
nothing. Exit 0 then, 1 otherwise with the reason.

``delivery-daemon softstore sync-stock --config C [--store S]`` sets each stock product's ``count`` on SoftStore to
the keys left in the pool now (see :mod:`delivery_daemon.stock.sync`), printing one line per product; exit 1 when
a product could not be synced.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from delivery_daemon.cli.options import add_config_option
from delivery_daemon.clock import SystemClock
from delivery_daemon.config import StoreSettings, load_settings
from delivery_daemon.errors import ConfigError, DeliveryDaemonError
from delivery_daemon.marketplaces.base import AdapterContext
from delivery_daemon.marketplaces.softstore import SoftStoreAdapter, signed_test_webhook
from delivery_daemon.marketplaces.softstore_seller import connect


def _softstore_index(stores: Sequence[StoreSettings], name: str) -> int:
    """Where the SoftStore store ``name`` is in the configuration, or a ConfigError."""
    for index, store in enumerate(stores):
        if store.name == name:
            if store.marketplace != "softstore":
                raise ConfigError(f"stores[{index}].marketplace", f"store {name!r} is not a SoftStore store")
            return index
    raise ConfigError("stores", f"no store named {name!r}")


def _adapter(config: str, store_name: str, transport: httpx.AsyncBaseTransport | None = None) -> SoftStoreAdapter:
    settings = load_settings(config)
    index = _softstore_index(settings.stores, store_name)
    return SoftStoreAdapter(
        AdapterContext(
            store=settings.stores[index],
            path=f"stores[{index}]",
            clock=SystemClock(),
            delivery=settings.delivery,
            transport=transport,
        )
    )


async def _connect_command(args: argparse.Namespace) -> int:
    adapter = _adapter(args.config, args.store)
    try:
        result = await connect(adapter.seller(), args.public_url, check=args.check)
    except DeliveryDaemonError as exc:
        print(f"delivery-daemon: softstore connect failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await adapter.aclose()
    if args.check:
        if result.before == args.public_url:
            print(f"{args.store}: api_url is {result.before} (matches)")
            return 0
        print(f"{args.store}: api_url is {result.before or '(not set)'}, expected {args.public_url}")
        return 1
    if not result.changed:
        print(f"{args.store}: api_url already {result.after} (unchanged)")
        return 0
    if result.after != args.public_url:
        print(f"{args.store}: SoftStore kept api_url {result.after!r} after the update", file=sys.stderr)
        return 1
    print(f"{args.store}: api_url {result.before or '(not set)'} -> {result.after}")
    return 0


_TEST_ANSWERS = {
    403: "the signature was refused: the daemon there has another api_key for this store",
    404: "no such store at this URL (check the store name and the path /webhooks/<store>)",
    422: "the daemon there has another api_url for this store (the test's delivery_url is on this one's)",
}


async def _test_webhook_command(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    index = _softstore_index(settings.stores, args.store)
    store = settings.stores[index]
    if store.api_key is None or store.api_url is None:
        raise ConfigError(f"stores[{index}]", "needs api_url and api_key to sign a test webhook")
    # A wildcard listen address is reached on loopback (not a bind: S104 is about listening).
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104 (compares with the wildcard; binds nothing)
    url = args.public_url or f"http://{host}:{settings.server.port}/webhooks/{store.name}"
    body = signed_test_webhook(store.api_key.get_secret_value(), store.api_url)
    try:
        async with httpx.AsyncClient(timeout=args.timeout, follow_redirects=False) as client:
            response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        print(f"{url}: not reached: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    answer = response.text[:200].strip()
    try:
        ignored = response.status_code == 200 and response.json().get("status") == "ignored"
    except (ValueError, AttributeError):
        ignored = False
    if ignored:
        print(f"{url}: OK — reached the daemon, signature verified for store {store.name}, nothing stored")
        return 0
    reason = _TEST_ANSWERS.get(response.status_code, "not the daemon's answer to a test webhook")
    if response.is_redirect:
        reason = f"redirected to {response.headers.get('location')} (use that URL; marketplaces do not follow)"
    print(f"{url}: {response.status_code} {answer} — {reason}", file=sys.stderr)
    return 1


async def _sync_stock_command(args: argparse.Namespace) -> int:
    # Imported when it runs: the stores' machinery and every marketplace type would slow every command's start.
    from delivery_daemon.cli.stock import describe, sync_for_command

    settings = load_settings(args.config)
    softstore = [store.name for store in settings.stores if store.marketplace == "softstore"]
    if args.store is not None:
        _softstore_index(settings.stores, args.store)
        softstore = [args.store]
    elif args.product is not None:
        raise ConfigError("--product", "needs --store")
    results = await sync_for_command(settings, stores=softstore, product=args.product, log_level="warning")
    if not results:
        print("no stock products to sync (a product needs the stock generator or a listed_count)")
    for result in results:
        print(describe(result))
    return 1 if any(result.outcome == "failed" for result in results) else 0


def register(sub: Any) -> None:
    group = sub.add_parser("softstore", help="SoftStore seller tooling").add_subparsers(
        dest="softstore_command", required=True
    )
    conn = group.add_parser("connect", help="point the seller's webhook (api_url) at this daemon")
    add_config_option(conn)
    conn.add_argument("--store", required=True)
    conn.add_argument("--public-url", required=True, help="e.g. https://seller.example/webhooks/main")
    conn.add_argument("--check", action="store_true", help="only compare; exit 1 when it differs")
    conn.set_defaults(func=lambda args: asyncio.run(_connect_command(args)))
    test = group.add_parser("test-webhook", help="send a signed test webhook (an unpaid order: nothing is stored)")
    add_config_option(test)
    test.add_argument("--store", required=True)
    test.add_argument(
        "--public-url",
        help="the store's webhook URL as SoftStore calls it, e.g. "
        "https://seller.example/webhooks/main (default: the local server address)",
    )
    test.add_argument("--timeout", type=float, default=15.0)
    test.set_defaults(func=lambda args: asyncio.run(_test_webhook_command(args)))
    sync = group.add_parser("sync-stock", help="set each stock product's count on SoftStore to the keys left")
    add_config_option(sync)
    sync.add_argument("--store", help="only this store (default: every SoftStore store)")
    sync.add_argument("--product", help="only this product id (with --store; e.g. one served by the default)")
    sync.set_defaults(func=lambda args: asyncio.run(_sync_stock_command(args)))
