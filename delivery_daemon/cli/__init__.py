"""The ``delivery-daemon`` command. This is the edge: configuration is read here, plugins are discovered here,
and the explicit list of marketplace types (:func:`~delivery_daemon.compose.default_marketplaces`) is passed down.

Exit codes: 0 success, 1 the command ran and failed (e.g. the demo saw a wrong delivery), 2 bad configuration or
usage — always one line on stderr, never a traceback.

Start-up is kept light (``--version`` and ``--help`` answer in well under 0.3 s: ``python -m bench.startup``): this
module imports only the standard library and light modules of ours, each command imports what it runs in its own
body, and a run builds in full only the parser of the command it names (:func:`build_parser`); every other command
is listed by its name and help line alone, from :data:`COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from delivery_daemon import __version__
from delivery_daemon.cli.options import add_config_option, missing_config
from delivery_daemon.errors import ConfigError, DeliveryDaemonError, PluginError
from delivery_daemon.reference.demo_all import MARKETPLACES, run_all_demos, run_marketplace_demo

if TYPE_CHECKING:
    from delivery_daemon.config import ReadableSecret, Settings


def _fail(message: str) -> int:
    print(f"delivery-daemon: error: {message}", file=sys.stderr)
    return 2


def _settings(path: str) -> tuple[Settings, list[ReadableSecret]]:
    """The settings, and the secret files other users may read (warned about, not refused)."""
    from delivery_daemon.config import load_settings

    warnings: list[ReadableSecret] = []
    return load_settings(path, warnings=warnings), warnings


def _plugins(settings: Settings) -> Mapping[str, Any]:
    """The plugins, each imported only when a product names it: a broken plugin no product uses does not stop the
    start."""
    from delivery_daemon.generators.discovery import discover

    try:
        return discover(settings.plugins.directory)
    except PluginError as exc:  # only a missing directory fails discovery: name the key that points at it
        raise ConfigError(
            "plugins.directory",
            str(exc),
            "an existing directory of single-file plugins (*.py), or no plugins.directory",
        ) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    # Imported when it runs (see the module docstring), as in the other commands below.
    import asyncio

    from sqlalchemy.engine import make_url

    from delivery_daemon.clock import SystemClock
    from delivery_daemon.compose import default_marketplaces
    from delivery_daemon.net.guard import NetPolicy
    from delivery_daemon.pipeline.destinations import check_destinations
    from delivery_daemon.pipeline.stores import build_stores
    from delivery_daemon.storage.engine import check_driver

    settings, readable = _settings(args.config)
    check_driver(settings.database.url)
    plugins = _plugins(settings)
    stores = build_stores(settings, default_marketplaces(), plugins, SystemClock())
    try:
        warnings = asyncio.run(check_destinations(stores, NetPolicy.from_settings(settings.security)))
    except ConfigError:
        asyncio.run(_close(stores))
        raise
    url = make_url(settings.database.url).render_as_string(hide_password=True)
    print(f"configuration OK: {args.config}")
    print(f"  database: {url} (synchronous={settings.database.synchronous})")
    print(
        f"  receiver: http://{settings.server.host}:{settings.server.port}/webhooks/<store>"
        f" (body cap {settings.server.max_body_bytes} bytes)"
    )
    print(
        f"  worker:   concurrency {settings.worker.concurrency}, retries after "
        + ", ".join(f"{d:g}s" for d in settings.delivery.retry_schedule)
    )
    for store in stores.values():
        where = f" at {store.settings.api_url}" if store.settings.api_url else ""
        sink = store.sink.name
        print(f"  store {store.name}: {store.settings.marketplace}{where}, delivers through {sink}")
        for product_id, product in store.products.items():
            print(f"    product {product_id}: generator {product.generator_name}")
        if store.default is not None:
            print(f"    any other product: generator {store.default.generator_name}")
    for warning in [*warnings, *readable, *_unused_broken(plugins)]:
        print(f"  warning: {warning}")
    asyncio.run(_report_status(stores))
    return 0


def _unused_broken(plugins: Mapping[str, Any]) -> list[str]:
    """Broken plugins no product uses (they do not stop the start; ``check-config`` imports them all to say so)."""
    from delivery_daemon.generators.discovery import BrokenPlugin, Plugins  # see the module docstring

    if not isinstance(plugins, Plugins):
        return []
    return [
        f"unused plugin {entry.name!r} is broken: {entry.error}"
        for entry in plugins.listing()
        if isinstance(entry, BrokenPlugin)
    ]


async def _close(stores: dict[str, Any]) -> None:
    for store in stores.values():
        await store.aclose()


async def _report_status(stores: dict[str, Any], limit_s: float = 5.0) -> None:
    """Ask each marketplace that can report a status; never fails the check (the marketplace may be down)."""
    import asyncio

    for store in stores.values():
        status = getattr(store.marketplace, "status", None)
        if status is not None:
            try:
                async with asyncio.timeout(limit_s):
                    line = await status()
            except (DeliveryDaemonError, OSError, TimeoutError) as exc:
                line = f"marketplace not reachable now ({type(exc).__name__}: {exc})"
            print(f"  store {store.name} status: {line}")
        await store.aclose()


def cmd_serve(args: argparse.Namespace) -> int:
    from delivery_daemon.compose import default_marketplaces
    from delivery_daemon.daemon import run_daemon
    from delivery_daemon.logs import configure_logging

    settings, readable = _settings(args.config)
    # Before the plugins are imported: what they log (or warn) on import is a line of the same stream.
    configure_logging(args.log_format or settings.logging.format, args.log_level or settings.logging.level)
    plugins = _plugins(settings)
    # SIGTERM drains and exits 0, SIGHUP reloads the stores: see daemon.py.
    return run_daemon(
        args.config, settings, marketplaces=default_marketplaces(), plugins=plugins, readable_secrets=readable
    )


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from delivery_daemon.reference.demo import run_demo

    if args.all:
        return asyncio.run(run_all_demos(orders=args.orders))
    if args.marketplace:
        return asyncio.run(run_marketplace_demo(args.marketplace, orders=args.orders))
    return asyncio.run(run_demo(orders=args.orders))


def cmd_marketplace(args: argparse.Namespace) -> int:
    import asyncio

    from delivery_daemon.logs import configure_logging
    from delivery_daemon.reference.softstore import run_marketplace

    configure_logging("auto", "info")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_marketplace(
                host=args.host,
                port=args.port,
                api_key=args.api_key,
                seller_url=args.seller_url,
                products=args.product or ["demo-product"],
            )
        )
    return 0


CORE = {
    "serve": "run the webhook receiver and the delivery worker",
    "check-config": "validate a configuration file and summarise what would run",
    "demo": "deliver a few orders end to end against the reference marketplace",
    "marketplace": "run the reference SoftStore marketplace on its own",
}


def _register_core(sub: Any) -> None:
    serve = sub.add_parser("serve", help=CORE["serve"])
    add_config_option(serve)
    serve.add_argument("--log-format", choices=["auto", "json", "console"])
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help=CORE["check-config"])
    add_config_option(check)
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help=CORE["demo"])
    demo.add_argument("--orders", type=int, default=6)
    which = demo.add_mutually_exclusive_group()
    which.add_argument(
        "--marketplace",
        choices=MARKETPLACES,
        help="that marketplace's reference side and delivery channel (default: softstore)",
    )
    which.add_argument("--all", action="store_true", help="every marketplace's demo in turn")
    demo.set_defaults(func=cmd_demo)

    market = sub.add_parser("marketplace", help=CORE["marketplace"])
    market.add_argument("--host", default="127.0.0.1")
    market.add_argument("--port", type=int, default=8900)
    market.add_argument("--seller-url", help="where webhooks are sent, e.g. http://127.0.0.1:8080/webhooks/main")
    market.add_argument("--api-key", default="reference-api-key")
    market.add_argument("--product", action="append", help="a product id to offer (repeatable)")
    market.set_defaults(func=cmd_marketplace)


class CommandGroup(NamedTuple):  # not a dataclass: importing dataclasses (and inspect) is ~15 ms of --version
    """``module.function(subparsers)`` adds ``commands`` (name → the help line ``--help`` lists for it)."""

    module: str
    function: str
    commands: dict[str, str]

    def register(self, sub: Any) -> None:
        """Import the module (only now: its imports, the database and the config models, are most of a light
        command's start-up) and add its commands."""
        getattr(importlib.import_module(self.module), self.function)(sub)


DB = "back up the database, purge old order data, migrate to PostgreSQL"
COMMAND_GROUPS: list[CommandGroup] = [
    CommandGroup(__name__, "_register_core", CORE),
    CommandGroup(
        "delivery_daemon.cli.init", "register", {"init": "write a first config.yaml and secrets file for a marketplace"}
    ),
    CommandGroup(
        "delivery_daemon.cli.plugins",
        "register",
        {
            "plugins": "generator plugins",
            "stock": "pre-made keys for the stock generator",
            "keys": "signing keys for the signed generator",
            "license": "signed licence keys",
        },
    ),
    CommandGroup("delivery_daemon.cli.softstore", "register", {"softstore": "SoftStore seller tooling"}),
    CommandGroup(
        "delivery_daemon.cli.orders",
        "register",
        {"orders": "list, inspect, retry, redeliver, cancel, revoke or reissue orders"},
    ),
    CommandGroup(
        "delivery_daemon.cli.watchdog",
        "register",
        {
            "reconcile": "list marketplaces' paid orders now; queue those without a job, or raise them as missed",
            "missed": "paid orders without a job the daemon cannot deliver: the seller must act",
        },
    ),
    CommandGroup("delivery_daemon.cli.database", "register", {"db": DB}),
    CommandGroup("delivery_daemon.cli.migrate", "register_db_migrate", {"db": DB}),  # adds `db migrate`
    CommandGroup(
        "delivery_daemon.cli.chaos",
        "register",
        {"chaos": "SIGKILL the daemon under marketplace faults and check nothing is lost"},
    ),
]
"""Every command, in ``--help``'s order; a feature's commands live in its own module. The help lines repeat what
each module registers, so that listing the commands imports none of them (tests/cli/test_cli_startup.py checks that
the two agree)."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; or, given the ``command`` a run names (``""`` for none, as in ``--help``), one where only
    that command's group is registered in full and every other command is its name and help line alone."""
    parser = argparse.ArgumentParser(
        prog="delivery-daemon", description="Turn a marketplace's paid-order webhook into a delivered licence key."
    )
    parser.add_argument("--version", action="version", version=f"delivery-daemon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        if command is None or command in group.commands:
            group.register(sub)
            continue
        for name, line in group.commands.items():
            if name not in sub.choices:
                sub.add_parser(name, help=line)
    return parser


def _command(argv: Sequence[str]) -> str:
    """The command a command line names: its first word that is not an option ("" for none)."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command(argv)).parse_args(argv)
    problem = missing_config(args)
    if problem is not None:
        return _fail(problem)
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, PluginError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
