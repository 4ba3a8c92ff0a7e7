"""Re-sealing at rest: legacy stock rows sealed (and compacted away) at start, and ``db reencrypt`` after rotation."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from alembic import command
from sqlalchemy import select, text

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import Daemon, build_daemon, default_marketplaces
from delivery_daemon.generators.discovery import discover
from delivery_daemon.logs import configure_logging
from delivery_daemon.storage.cipher import Cipher, new_key_line, parse_keys
from delivery_daemon.storage.engine import create_db_engine
from delivery_daemon.storage.queue import JobQueue
from delivery_daemon.storage.schema import alembic_config
from delivery_daemon.storage.stock_pool import KEYS, StockError, StockPool
from tests.support.stack import PRODUCT, STORE, Stack, accepted_text, stack_settings

LEGACY_KEYS = [f"LEGACY-{i:03d}-QWZ" for i in range(40)]


@pytest.fixture
def logs() -> io.StringIO:
    """The JSON log lines of the test."""
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    return stream


def _events(logs: io.StringIO, name: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, logs.getvalue().splitlines()) if e["event"] == name]


def _database_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if not p.name.endswith(".key"))


def previous_release_database(path: Path, keys: list[str]) -> None:
    """A database as the previous release left it: schema revision 0003, stock keys stored in plaintext."""
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003")
        conn.execute(
            text("INSERT INTO stock_keys (store, product_id, key, imported_at) VALUES (:s, :p, :k, 1.0)"),
            [{"s": STORE, "p": "serials", "k": key} for key in keys],
        )
    engine.dispose()
    assert LEGACY_KEYS[0].encode() in _database_bytes(path)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    """``start(**sections)`` builds the daemon on ``tmp_path/daemon.db`` as its start would; closed afterwards."""
    daemons: list[Daemon] = []

    def factory(**sections: Any) -> Daemon:
        settings = stack_settings(tmp_path / "daemon.db", "https://softstore.invalid/api", "api-key", **sections)
        daemons.append(
            build_daemon(
                settings, marketplaces=default_marketplaces(), plugins=dict(discover(None)), clock=ManualClock()
            )
        )
        return daemons[-1]

    yield factory
    for daemon in daemons:
        anyio.run(daemon.aclose)


def test_legacy_stock_rows_are_sealed_at_start_and_gone_from_the_file(
    tmp_path: Path, logs: io.StringIO, start: Any
) -> None:
    """Starting on a previous release's database seals its plaintext stock keys, logs stock.sealed with the count
    only, and compacts the file: no key is left in it; claims still return the plaintext."""
    db = tmp_path / "daemon.db"
    previous_release_database(db, LEGACY_KEYS)
    daemon = start()
    assert [e["count"] for e in _events(logs, "stock.sealed")] == [40]
    assert _events(logs, "security.compacted") and not _events(logs, "security.compact_failed")
    assert not any(key in logs.getvalue() for key in LEGACY_KEYS)
    raw = _database_bytes(db)
    assert not [key for key in LEGACY_KEYS if key.encode() in raw]
    pool = StockPool(daemon.engine, daemon.clock, daemon.resources.cipher)
    assert pool.claim(STORE, "serials", "shop:o1", 2) == LEGACY_KEYS[:2]
    assert pool.import_keys(STORE, "serials", LEGACY_KEYS[5:7]).duplicates == 2  # de-duplicated by key_hash now


def test_compaction_failure_is_logged_and_start_continues(tmp_path: Path, logs: io.StringIO, start: Any) -> None:
    """With a reader holding the WAL, compaction cannot finish: security.compact_failed is logged, the daemon
    starts anyway and the stock is sealed."""
    db = tmp_path / "daemon.db"
    previous_release_database(db, LEGACY_KEYS)
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM jobs").fetchone()
    try:
        daemon = start(database={"busy_timeout_ms": 100})
    finally:
        reader.close()
    assert [e["error"] for e in _events(logs, "security.compact_failed")] == ["SQLAlchemyError"]
    with daemon.engine.connect() as conn:
        assert all(key.startswith("enc1:") for key in conn.execute(select(KEYS.c.key)).scalars())


def _keys_of(stack: Stack) -> Path:
    return Path(stack.settings.database.url.removeprefix("sqlite:///") + ".key")


async def test_reencrypt_moves_content_and_stock_to_the_new_key(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a rotation, `db reencrypt --compact` re-seals delivered content, payloads and stock keys under the new
    key: the new key alone opens everything, the old key alone no longer does."""
    placed = [await stack.market.place_order(PRODUCT, 1) for _ in range(3)]
    await stack.drain()
    cipher = stack.daemon.resources.cipher
    assert cipher is not None
    StockPool(stack.daemon.engine, stack.clock, cipher).import_keys(STORE, "serials", ["STOCK-A", "STOCK-B"])
    old = _keys_of(stack).read_text().splitlines()[-1]
    new = new_key_line()
    _keys_of(stack).write_text(f"{new}\n{old}\n")
    code = await anyio.to_thread.run_sync(
        main, ["db", "reencrypt", "--batch", "2", "--compact", "--database", stack.settings.database.url]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 order(s), 2 stock key(s), 1 daemon secret(s)" in out and "database compacted" in out

    engine = create_db_engine(stack.settings.database.url)
    only_new, only_old = Cipher(parse_keys(new, "new")), Cipher(parse_keys(old, "old"))
    queue = JobQueue(engine, stack.clock, only_new)
    try:
        for order in placed:
            job = await queue.find(STORE, order.id_order)
            assert job is not None and job.content is not None
            assert json.loads(job.content)["text"] == accepted_text(stack.market, order.id_order)
    finally:
        queue.close()
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT payload, content FROM jobs")).all()
    assert {value.split(":")[1] for row in stored for value in row} == {only_new.current}
    with pytest.raises(StockError, match="not configured"):
        StockPool(engine, stack.clock, only_old).claim(STORE, "serials", "shop:x", 1)
    assert StockPool(engine, stack.clock, only_new).claim(STORE, "serials", "shop:x", 2) == ["STOCK-A", "STOCK-B"]
    again = await anyio.to_thread.run_sync(main, ["db", "reencrypt", "--database", stack.settings.database.url])
    assert again == 0 and "0 order(s), 0 stock key(s), 0 daemon secret(s)" in capsys.readouterr().out
    engine.dispose()


def test_reencrypt_without_a_key_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no key configured or beside the database, `db reencrypt` exits 2 naming the setting."""
    engine = create_db_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    engine.dispose()
    config = tmp_path / "daemon.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": f"sqlite:///{tmp_path / 'plain.db'}"}}))
    assert main(["db", "reencrypt", "--config", str(config)]) == 2
    assert "security.encryption_key_file" in capsys.readouterr().err


async def test_reencrypt_and_compact_on_both_backends(db_url: str) -> None:
    """reencrypt re-seals a job and stock keys (FOR UPDATE batches on PostgreSQL) and compact succeeds there too
    (VACUUM FULL): afterwards the new key alone opens both, and the old one opens neither."""
    from delivery_daemon.order import IncomingOrder
    from delivery_daemon.storage.rekey import compact, reencrypt

    old, new = new_key_line(), new_key_line()
    engine = create_db_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    clock = ManualClock()
    queue = JobQueue(engine, clock, Cipher(parse_keys(old, "old")))
    added = await queue.enqueue(
        IncomingOrder(
            store=STORE, marketplace="softstore", order_id="o1", product_id="p", payload={"token": "secret-token"}
        )
    )
    queue.close()
    StockPool(engine, clock, Cipher(parse_keys(old, "old"))).import_keys(STORE, "p", ["K-1", "K-2", "K-3"])
    report = reencrypt(engine, clock, Cipher(parse_keys(f"{new}\n{old}", "both")), batch=2)
    assert (report.jobs, report.stock_keys, report.secrets) == (1, 3, 1)
    assert compact(engine)
    only_new, only_old = Cipher(parse_keys(new, "new")), Cipher(parse_keys(old, "old"))
    queue = JobQueue(engine, clock, only_new)
    job = await queue.get(added.job_id)
    queue.close()
    assert job is not None and "secret-token" in job.payload
    with pytest.raises(StockError):
        StockPool(engine, clock, only_old).claim(STORE, "p", "shop:o1", 1)
    assert StockPool(engine, clock, only_new).claim(STORE, "p", "shop:o1", 3) == ["K-1", "K-2", "K-3"]
    engine.dispose()
