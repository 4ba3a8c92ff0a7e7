"""Engine creation: the driver for a plain ``postgresql://`` URL, SQLite files created private, the ``database``
section's settings applied, read-only engines, and one place in the package that makes engines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

import delivery_daemon
from delivery_daemon.config import DatabaseSettings
from delivery_daemon.storage.engine import create_db_engine, create_schema, with_driver


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


def test_the_database_section_is_applied(tmp_path: Path) -> None:
    """An engine made from the ``database`` section uses its ``synchronous`` and ``busy_timeout_ms``; a bare URL
    gets the section's defaults, and an explicit option wins over either."""
    url = f"sqlite:///{tmp_path / 'd.db'}"

    def pragmas(*args: object, **options: object) -> tuple[int, int]:
        engine = create_db_engine(*args, **options)  # type: ignore[arg-type]  # each case passes what it tests
        try:
            with engine.connect() as conn:
                return (
                    conn.exec_driver_sql("PRAGMA synchronous").scalar_one(),
                    conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one(),
                )
        finally:
            engine.dispose()

    assert pragmas(DatabaseSettings(url=url, synchronous="NORMAL", busy_timeout_ms=1234)) == (1, 1234)
    assert pragmas(url) == (2, 10_000)  # FULL
    assert pragmas(DatabaseSettings(url=url, synchronous="NORMAL"), synchronous="OFF") == (0, 10_000)


def test_a_read_only_engine_neither_writes_nor_waits_for_the_writer(tmp_path: Path) -> None:
    """A checker's engine (``read_only``) reads while a writer holds the write lock, and refuses to write."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    writer = create_db_engine(url)
    create_schema(writer)
    reader = create_db_engine(url, read_only=True, busy_timeout_ms=0)
    try:
        with writer.begin() as holding:  # BEGIN IMMEDIATE: the write lock is held until the block ends
            holding.execute(text("DELETE FROM jobs"))
            with reader.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0
        with reader.connect() as conn, pytest.raises(OperationalError, match="readonly"):
            conn.execute(text("DELETE FROM jobs"))
    finally:
        reader.dispose()
        writer.dispose()


def test_engines_are_made_in_one_place() -> None:
    """Only storage/engine.py calls SQLAlchemy's ``create_engine``: every engine gets the same tuning."""
    package = Path(delivery_daemon.__file__).parent
    callers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"\bcreate_engine\(", path.read_text(encoding="utf-8"))
    )
    assert callers == ["storage/engine.py"]


MISSING_DRIVER = "database.url: PostgreSQL needs the psycopg driver: pip install 'delivery-daemon[postgres]'"


def test_postgresql_without_its_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """psycopg is the ``postgres`` extra: without it a ``postgresql://`` URL is one line naming the extra, exit 2, from
    the engine factory, ``check-config`` and an operator command alike."""
    from delivery_daemon.cli import main
    from delivery_daemon.errors import ConfigError

    monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` does where it is not installed
    url = "postgresql://delivery@127.0.0.1:9/shop"
    with pytest.raises(ConfigError) as raised:
        create_db_engine(url)
    assert str(raised.value) == MISSING_DRIVER
    config = tmp_path / "c.yaml"
    config.write_text(f"database: {{url: '{url}'}}\n")
    for argv in (["check-config", "--config", str(config)], ["orders", "list", "--database", url]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert err == f"delivery-daemon: error: {MISSING_DRIVER}\n" and out == "", argv


def test_serve_without_the_driver_exits_2(tmp_path: Path) -> None:
    """``serve`` on PostgreSQL where psycopg is not installed: exit 2 and the same one line, no traceback."""
    config = tmp_path / "c.yaml"
    config.write_text("database: {url: 'postgresql://delivery@127.0.0.1:9/shop'}\n")
    probe = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from delivery_daemon.cli import main\n"
        f"sys.exit(main(['serve', '--config', {str(config)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"delivery-daemon: error: {MISSING_DRIVER}\n"
