"""Shared fixtures: the reference marketplace and the daemon as real servers on free loopback ports.

``stack`` gives both, wired together, with the worker *not* started: a test sends webhooks over HTTP, then calls
``await stack.drain()`` (burst mode) to process the queue deterministically, advancing the daemon's injected
:class:`~delivery_daemon.clock.ManualClock` when it needs retries to fall due. Tests of the live worker pass
``start_worker=True`` through ``make_stack``; ``products={id: {...}}`` adds products to the store and
``daemon_options`` is passed to ``create_app`` (e.g. ``generator_budget``).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import create_app, default_marketplaces
from delivery_daemon.generators.discovery import discover
from delivery_daemon.http.serving import serve
from delivery_daemon.logs import configure_logging
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from tests.support.pg import postgres_server
from tests.support.stack import PRODUCT, STORE, Stack, stack_settings

# Property tests: a quick "ci" profile by default; HYPOTHESIS_PROFILE=full for 2,000 examples per property (over
# 10,000 webhooks in all across tests/guarantees/test_fuzz_webhooks.py's properties, counted by its last test).
hypothesis_settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.register_profile(
    "full", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """structlog's configuration is process-wide: each test starts from the defaults, whatever the last one set
    (a level of "error" left behind hid the info events a later ``capture_logs`` test waited for)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def make_stack(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Stack]]:
    """``async with make_stack(start_worker=False, products=None, store_delivery=None, daemon_options=None,
    **settings_sections)``."""

    @contextlib.asynccontextmanager
    async def factory(
        *,
        start_worker: bool = False,
        products: dict[str, Any] | None = None,
        store_delivery: dict[str, Any] | None = None,
        daemon_options: dict[str, Any] | None = None,
        **sections: Any,
    ) -> AsyncIterator[Stack]:
        logs = io.StringIO()
        configure_logging("json", "debug", stream=logs)
        api_key = secrets.token_hex(20)
        market = SoftStoreMarketplace(api_key=api_key)
        market.add_product(PRODUCT, count=1000)
        market.add_product("prod-2", count=1000)
        clock = ManualClock()
        async with serve(market.app) as market_server:
            market.bind(market_server.url)
            settings = stack_settings(
                tmp_path / "daemon.db",
                market.api_base,
                api_key,
                products=products,
                store_delivery=store_delivery,
                **sections,
            )
            app = create_app(
                settings,
                marketplaces=default_marketplaces(),
                plugins=dict(discover(settings.plugins.directory)),
                clock=clock,
                start_worker=start_worker,
                **(daemon_options or {}),
            )
            async with serve(app) as daemon_server:
                market.seller_url = f"{daemon_server.url}/webhooks/{STORE}"
                stack = Stack(
                    market=market,
                    daemon=app.state.daemon,
                    url=daemon_server.url,
                    settings=settings,
                    clock=clock,
                    api_key=api_key,
                    logs=logs,
                )
                try:
                    yield stack
                finally:
                    await stack.client.aclose()

    return factory


@pytest.fixture
async def stack(make_stack: Callable[..., contextlib.AbstractAsyncContextManager[Stack]]) -> AsyncIterator[Stack]:
    async with make_stack() as running:
        yield running


# -- PostgreSQL (issue 8): one throw-away server per test session, one fresh database per test ---------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A PostgreSQL server on a free loopback port for the whole session; skips when the binaries are absent."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    """A SQLAlchemy URL of a new, empty PostgreSQL database."""
    return str(pg_server.create_database())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on both backends: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'daemon.db'}"
    return str(request.getfixturevalue("pg_url"))
