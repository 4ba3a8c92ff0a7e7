"""Engine creation: the driver for a plain ``postgresql://`` URL, and SQLite files created private."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from delivery_daemon.storage.engine import create_db_engine, with_driver


def test_plain_postgresql_url_uses_psycopg_3() -> None:
    """``database.url: postgresql://…`` (the form sellers copy) gets psycopg 3, not SQLAlchemy's psycopg2 default,
    which is not installed; the password survives the rewrite."""
    engine = create_db_engine("postgresql://delivery:s3cr%40t@127.0.0.1:5/shop")  # no connection is made yet
    assert engine.dialect.driver == "psycopg"
    assert engine.url.password == "s3cr@t" and engine.url.database == "shop"


def test_other_urls_are_left_alone() -> None:
    """An explicit driver and SQLite URLs pass through unchanged."""
    for url in ("postgresql+psycopg://u:p@h/d", "sqlite:///x.db", "sqlite://"):
        assert with_driver(url) == url


def test_a_sqlite_daemon_does_not_import_the_postgresql_dialect(tmp_path: Path) -> None:
    """Taking an order into SQLite never loads SQLAlchemy's PostgreSQL dialect (~2 MB of idle memory)."""
    probe = f"""
import asyncio, sys
import delivery_daemon.compose, delivery_daemon.cli
from delivery_daemon.clock import SystemClock
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.queue import JobQueue
engine = create_db_engine({f"sqlite:///{tmp_path / 'd.db'}"!r})
create_schema(engine)
queue = JobQueue(engine, SystemClock())
order = IncomingOrder(store="s", marketplace="softstore", order_id="o1", product_id="p", payload={{}})
print(asyncio.run(queue.enqueue(order)).created, "sqlalchemy.dialects.postgresql" in sys.modules)
queue.close()
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"]
