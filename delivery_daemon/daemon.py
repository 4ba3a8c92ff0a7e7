"""The ``serve`` process: servers, signals and configuration reload.

* **SIGTERM / SIGINT** — stop accepting connections, let open requests finish, then (app lifespan) let in-flight
  deliveries finish within ``worker.shutdown_grace`` seconds and release the rest, so the next start takes them.
  Exit status 0. A second SIGINT skips the waiting.
* **SIGHUP** — re-read the configuration file and rebuild the stores (marketplace accounts, products, generators,
  templates) with :func:`~delivery_daemon.pipeline.stores.build_stores`, then swap them in one assignment: a request
  or job sees either the old stores or the new ones, never a mix, and nothing is dropped. A bad file is refused with a
  ``config.reload_failed`` log line and the old configuration keeps running. Other sections (database, server,
  worker, delivery, logging, admin, retention, plugins, status, stock_sync, watchdog) need a restart; a reload that
  changes them says so in its log line (the watchdog does list the reloaded stores at its next run).

uvicorn's own signal handling is switched off (it would re-raise SIGTERM after shutdown, exiting 143 instead of 0);
the handlers here go through the event loop, so they run between, never inside, other code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog
import uvicorn
from starlette.types import ASGIApp

from delivery_daemon import __version__
from delivery_daemon.compose import Daemon, create_app
from delivery_daemon.config import ReadableSecret, Settings, load_settings
from delivery_daemon.http.metrics import create_admin_app
from delivery_daemon.http.protocol import header_deadline_protocol
from delivery_daemon.http.serving import bind_socket, settle_heap
from delivery_daemon.logs import REDACTOR
from delivery_daemon.marketplaces.base import MarketplaceType
from delivery_daemon.net.guard import NetPolicy
from delivery_daemon.pipeline.destinations import check_destinations
from delivery_daemon.pipeline.stores import Store, build_stores

log = structlog.get_logger("delivery_daemon.daemon")

RESTART_SECTIONS = (
    "database",
    "server",
    "worker",
    "delivery",
    "logging",
    "admin",
    "retention",
    "plugins",
    "status",
    "stock_sync",
    "watchdog",
)
"""Settings a reload does not apply (they shape sockets, the database and the worker)."""


class _Server(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to :class:`Runner`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _status_mount(daemon: Daemon, settings: Settings) -> Any:
    # Imported only when enabled: the page's package (Jinja2 templates, routes) is idle RSS a daemon without it
    # never needs (docs/performance.md, idle memory).
    from delivery_daemon.status import status_mount

    return status_mount(daemon, settings.status)


def _server(
    app: ASGIApp,
    *,
    lifespan: Literal["on", "off"],
    grace: float,
    header_timeout: float,
    trusted_proxies: Sequence[str] = (),
) -> _Server:
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise (or FORWARDED_ALLOW_IPS says): only
    # server.trusted_proxies are believed here, and with none the headers are not read at all.
    # log_config=None: uvicorn's records go to the root logger, which logs.configure_logging renders as the daemon's
    # own lines (uvicorn's default config would print them as plain text on stderr).
    return _Server(
        uvicorn.Config(
            app,
            lifespan=lifespan,
            log_level="warning",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=max(1, round(grace)),
            server_header=False,
            http=header_deadline_protocol(header_timeout),
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies),
        )
    )


class Runner:
    """Runs the daemon until a stop signal; ``reload()`` applies a changed configuration file."""

    def __init__(
        self,
        config_path: str | Path,
        settings: Settings,
        *,
        marketplaces: Sequence[MarketplaceType],
        plugins: Mapping[str, Any],
        readable_secrets: Sequence[ReadableSecret] = (),
    ) -> None:
        self.config_path = Path(config_path)
        self.settings = settings
        self.readable_secrets = readable_secrets  # found while loading, logged once logging is set up
        self.marketplaces = marketplaces
        self.plugins = plugins
        self.app = create_app(settings, marketplaces=marketplaces, plugins=plugins)
        self.daemon: Daemon = self.app.state.daemon
        self._servers: list[_Server] = []
        self._background: set[asyncio.Task[bool]] = set()
        self._settled = False  # settle_heap() ran: once serving, and again after each reload

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean shutdown, 1 if the daemon could not start."""
        settings = self.settings
        _log_readable(self.readable_secrets)
        # A refused URL in config stops the start here (ConfigError, exit 2) rather than killing every order later.
        for warning in await check_destinations(self.daemon.stores, NetPolicy.from_settings(settings.security)):
            log.warning("config.destination_unchecked", detail=warning)
        grace = settings.worker.shutdown_grace
        listeners: list[tuple[ASGIApp, Literal["on", "off"], str, int]] = [
            (self.app, "on", settings.server.host, settings.server.port)
        ]
        if settings.admin.port is not None:
            # The status page lives on the admin address only (config refuses status.enabled without admin.port).
            extra = [_status_mount(self.daemon, settings)] if settings.status.enabled else []
            listeners.append((create_admin_app(self.daemon, extra), "off", settings.admin.host, settings.admin.port))
        sockets = [bind_socket(host, port) for _, _, host, port in listeners]
        self._servers = [
            _server(
                app,
                lifespan=lifespan,
                grace=grace,
                header_timeout=settings.server.header_timeout,
                trusted_proxies=settings.server.trusted_proxies,
            )
            for app, lifespan, _, _ in listeners
        ]
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._spawn_reload)
        tasks = [
            asyncio.create_task(server.serve(sockets=[sock]))
            for server, sock in zip(self._servers, sockets, strict=True)
        ]
        try:
            await self._announce(sockets)
            await asyncio.gather(*tasks)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            for sock in sockets:
                sock.close()
        if not self._servers[0].started:
            log.error("daemon.start_failed")
            return 1
        log.info("daemon.stopped")
        return 0

    async def _announce(self, sockets: list[Any]) -> None:
        while not all(server.started for server in self._servers):
            if any(server.should_exit for server in self._servers):
                return
            await asyncio.sleep(0.01)
        urls = [f"http://{_host(sock)}:{sock.getsockname()[1]}" for sock in sockets]
        self._settled = True
        frozen = settle_heap()
        log.info(
            "daemon.started",
            version=__version__,
            pid=os.getpid(),
            webhooks=f"{urls[0]}/webhooks/<store>",
            metrics=f"{urls[-1]}/metrics",
            stores=sorted(self.daemon.stores),
            heap_frozen=frozen,
        )
        if self.settings.status.enabled and len(urls) > 1:
            from delivery_daemon.status import MOUNT_PATH  # loaded already: the page is enabled (see _status_mount)

            log.info("status.serving", url=f"{urls[-1]}{MOUNT_PATH}/")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Begin a graceful shutdown (a second SIGINT forces it)."""
        forced = signum == signal.SIGINT and any(server.should_exit for server in self._servers)
        log.info(
            "daemon.stopping",
            signal=signal.Signals(signum).name,
            grace_s=self.settings.worker.shutdown_grace,
            forced=forced,
        )
        for server in self._servers:
            server.should_exit = True
            server.force_exit = server.force_exit or forced

    def _spawn_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload(self) -> bool:
        """Re-read the configuration file and swap in new stores; False (old ones kept) if it is bad."""
        log.info("config.reload_requested", path=str(self.config_path))
        stores: dict[str, Store] = {}
        readable: list[ReadableSecret] = []
        try:
            new = load_settings(self.config_path, warnings=readable)
            stores = build_stores(new, self.marketplaces, self.plugins, self.daemon.clock, hub=self.daemon.resources)
            await check_destinations(stores, NetPolicy.from_settings(new.security))
        except Exception as exc:  # any failure to build means "keep what runs"; ConfigError is the usual one
            log.error("config.reload_failed", path=str(self.config_path), error=str(exc), error_type=type(exc).__name__)
            await _close_when_done(stores, frozenset())  # stores built before a refused check hold HTTP clients
            return False
        _log_readable(readable)
        for store in stores.values():
            REDACTOR.add_source(store.marketplace.secrets)
            REDACTOR.add(*store.static_secrets())
        old_stores, in_flight = self.daemon.stores, self.daemon.worker.in_flight
        # One assignment each: receivers and the worker read daemon.stores on every use.
        self.daemon.stores = stores
        self.daemon.settings = self.daemon.settings.model_copy(update={"stores": new.stores})
        restart = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(self.settings, name)]
        log.info("config.reloaded", stores=sorted(stores), restart_needed=restart)
        await _close_when_done(old_stores, in_flight)
        if self._settled:
            settle_heap()
        return True


async def _close_when_done(stores: Mapping[str, Store], in_flight: frozenset[asyncio.Task[None]]) -> None:
    """Close replaced adapters once the jobs that started with them have finished (their HTTP clients)."""
    if in_flight:
        await asyncio.wait(in_flight)
    for store in stores.values():
        with contextlib.suppress(Exception):
            await store.aclose()


def _log_readable(readable: Sequence[ReadableSecret]) -> None:
    for secret in readable:
        log.warning("config.secret_file_readable", key=secret.key, file=secret.file, mode=f"{secret.mode:04o}")


def _host(sock: Any) -> str:
    host = str(sock.getsockname()[0])
    return f"[{host}]" if ":" in host else host


def run_daemon(
    config_path: str,
    settings: Settings,
    *,
    marketplaces: Sequence[MarketplaceType],
    plugins: Mapping[str, Any],
    readable_secrets: Sequence[ReadableSecret] = (),
) -> int:
    """``delivery-daemon serve``: build, serve, and return the exit status."""
    runner = Runner(
        config_path, settings, marketplaces=marketplaces, plugins=plugins, readable_secrets=readable_secrets
    )
    return asyncio.run(runner.run())
