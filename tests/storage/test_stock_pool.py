"""The stock pool and the ``stock`` generator: atomic one-order-per-key claims, waiting orders, imports."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import multiprocessing
import sqlite3
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from delivery_daemon_plugins.stock import StockGenerator
from sqlalchemy import func, select

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.errors import OutOfStock
from delivery_daemon.logs import configure_logging
from delivery_daemon.storage.cipher import Cipher, new_key_line, parse_keys
from delivery_daemon.storage.models import JobState
from delivery_daemon.storage.stock_pool import KEYS, StockError, StockPool, read_keys
from delivery_daemon.testing import fake_order, plugin_database, run_generator


@pytest.fixture(autouse=True)
def logs() -> io.StringIO:
    """Log lines of the test (structlog is global: every test here gets its own stream)."""
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    return stream


def _cipher() -> Cipher:
    return Cipher(parse_keys(new_key_line(), "test"))


def _pool(url: str) -> StockPool:
    from delivery_daemon.storage.engine import create_db_engine, create_schema

    engine = create_db_engine(url)
    create_schema(engine)
    return StockPool(engine, ManualClock(), _cipher())


@pytest.fixture
def pool(db_url: str) -> StockPool:
    """The sealing pool on both backends (PostgreSQL's claim and import count differ from SQLite's)."""
    return _pool(db_url)


def _database_bytes(path: Path) -> bytes:
    """The database file and its -wal/-shm companions, as a copy of the directory would hold them."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if not p.name.endswith(".key"))


def test_import_skips_and_counts_duplicates(pool: StockPool) -> None:
    """Keys already in the pool or repeated in one import are skipped and counted, per store and product."""
    assert pool.import_keys("s", "p", ["A", "B", "A"]).added == 2
    result = pool.import_keys("s", "p", ["B", "C"])
    assert (result.added, result.duplicates) == (1, 1)
    assert pool.import_keys("s", "other", ["A"]).added == 1
    assert [(lv.product_id, lv.available) for lv in pool.levels("s")] == [("other", 1), ("p", 3)]


def test_stored_keys_are_sealed_and_deduplicated_by_hash(pool: StockPool) -> None:
    """The key column holds only ciphertext and key_hash an HMAC; the same key imported twice is still one row."""
    assert pool.import_keys("s", "p", ["SECRET-1", "SECRET-2"]).added == 2
    assert (pool.import_keys("s", "p", ["SECRET-1"]).added, pool.import_keys("s", "p", ["SECRET-1"]).duplicates) == (
        0,
        1,
    )
    with pool.engine.connect() as conn:
        stored = conn.execute(select(KEYS.c.key, KEYS.c.key_hash)).all()
    assert len(stored) == 2
    assert all(key.startswith("enc1:") and "SECRET" not in key for key, _ in stored)
    assert all(len(digest) == 64 and "SECRET" not in digest for _, digest in stored)
    assert sorted(pool.claim("s", "p", "o1", 2)) == ["SECRET-1", "SECRET-2"]


def test_concurrent_first_imports_share_one_hash_key(db_url: str) -> None:
    """Two importers racing on an empty database (separate connections) agree on one HMAC key: the same keys
    imported by both end up once each."""
    from delivery_daemon.storage.engine import create_db_engine, create_schema
    from delivery_daemon.storage.vault import SECRETS

    cipher = _cipher()
    engines = [create_db_engine(db_url) for _ in range(2)]
    create_schema(engines[0])
    barrier = threading.Barrier(2)
    keys = [f"RACE-{i:03d}" for i in range(100)]

    def run(engine: Any) -> int:
        barrier.wait()
        return StockPool(engine, ManualClock(), cipher).import_keys("s", "p", keys).added

    with ThreadPoolExecutor(2) as executor:
        added = list(executor.map(run, engines))
    assert sum(added) == 100
    with engines[0].connect() as conn:
        assert conn.execute(select(func.count()).select_from(SECRETS)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(KEYS)).scalar_one() == 100
    for engine in engines:
        engine.dispose()


def test_copied_database_reveals_no_stock_key(tmp_path: Path) -> None:
    """Neither the raw bytes of the database files nor a sqlite3 dump contain an imported key; claims still
    return them in plaintext, and a pool without the key cannot open them."""
    path = tmp_path / "stock.db"
    engine = plugin_database(path)
    keys = [f"SERIAL-{i:04d}-ZQX" for i in range(50)]
    pool = StockPool(engine, ManualClock(), _cipher())
    assert pool.import_keys("s", "p", keys).added == 50
    dump = "\n".join(sqlite3.connect(path).iterdump())
    raw = _database_bytes(path)
    assert not [key for key in keys if key in dump or key.encode() in raw]
    assert "stock_hash_key" in dump and "enc1:" in dump  # the HMAC key is there, but sealed too
    assert pool.claim("s", "p", "o1", 3) == keys[:3]
    with pytest.raises(StockError, match="no encryption key"):
        StockPool(engine, ManualClock()).claim("s", "p", "o2", 1)
    with pytest.raises(StockError, match="not configured"):  # another key: what a stolen copy meets
        StockPool(engine, ManualClock(), _cipher()).claim("s", "p", "o3", 1)
    assert pool.levels()[0].available == 47  # the failed claims took nothing


def test_read_keys_text_and_csv(tmp_path: Path) -> None:
    """Text files give one key per line (blank and # lines skipped); CSV uses the key column or the first one."""
    text = tmp_path / "keys.txt"
    text.write_text("# batch 1\nAAA\n\n  BBB  \n")
    assert read_keys(text) == ["AAA", "BBB"]
    with_header = tmp_path / "keys.csv"
    with_header.write_text("id,key\n1,K-1\n2,K-2\n")
    assert read_keys(with_header) == ["K-1", "K-2"]
    bare = tmp_path / "bare.csv"
    bare.write_text("X-1,note\nX-2,note\n")
    assert read_keys(bare) == ["X-1", "X-2"]
    with pytest.raises(StockError, match="cannot read"):
        read_keys(tmp_path / "missing.txt")


def test_claim_is_idempotent_and_all_or_nothing(pool: StockPool) -> None:
    """The same order gets the same keys again; a claim that cannot be filled takes nothing."""
    pool.import_keys("s", "p", ["K1", "K2", "K3"])
    first = pool.claim("s", "p", "order-a", 2)
    assert first == ["K1", "K2"] and pool.claim("s", "p", "order-a", 2) == first
    with pytest.raises(OutOfStock):
        pool.claim("s", "p", "order-b", 2)
    assert pool.levels()[0].available == 1  # the failed claim took nothing
    assert pool.claim("s", "p", "order-c", 1) == ["K3"]


@pytest.mark.postgres
def test_keys_locked_by_a_concurrent_claim_are_a_retry_not_out_of_stock(pg_url: str) -> None:
    """On PostgreSQL, keys locked by another replica's open claim make a Retry: that claim may roll back, and an
    order parked as out of stock would wait for an import while keys are free. (SQLite serialises claims.)"""
    from sqlalchemy import text

    from delivery_daemon.errors import Retry

    pool = _pool(pg_url)
    pool.import_keys("s", "p", ["K1", "K2"])
    with pool.engine.connect() as other:
        other.execute(text("SELECT id FROM stock_keys WHERE claimed_by IS NULL FOR UPDATE"))
        with pytest.raises(Retry, match="concurrent claim"):
            pool.claim("s", "p", "order-a", 2)
        other.rollback()  # the other claim gave up
    assert len(pool.claim("s", "p", "order-a", 2)) == 2
    with pytest.raises(OutOfStock):  # truly empty is still out of stock
        pool.claim("s", "p", "order-b", 1)


def test_low_stock_event_once_per_crossing(pool: StockPool, logs: io.StringIO) -> None:
    """stock.low is logged when a claim crosses the threshold, not again below it, and again after a refill."""
    pool.import_keys("s", "p", [f"K{i}" for i in range(5)])

    def lows() -> list[dict[str, Any]]:
        events = [json.loads(line) for line in logs.getvalue().splitlines()]
        logs.seek(0)
        logs.truncate()
        return [e for e in events if e["event"] == "stock.low"]

    pool.claim("s", "p", "o1", 2, low_threshold=2)
    assert lows() == []
    pool.claim("s", "p", "o2", 1, low_threshold=2)
    assert [e["remaining"] for e in lows()] == [2]
    pool.claim("s", "p", "o3", 1, low_threshold=2)
    assert lows() == []
    pool.import_keys("s", "p", ["N1", "N2", "N3"])
    pool.claim("s", "p", "o4", 3, low_threshold=2)
    assert [e["remaining"] for e in lows()] == [1]


def _claim_many(db: str, prefix: str, count: int) -> list[str]:
    engine_pool = StockPool(plugin_database(db), ManualClock())
    got: list[str] = []
    for n in range(count):
        with contextlib.suppress(OutOfStock):
            got.extend(engine_pool.claim("s", "p", f"{prefix}-{n}", 1))
    return got


def test_no_key_issued_twice_across_processes(tmp_path: Path) -> None:
    """Two processes claiming 200 orders against 150 keys issue 150 distinct keys and nothing more."""
    db = tmp_path / "shared.db"
    StockPool(plugin_database(db), ManualClock()).import_keys("s", "p", [f"K{i:03d}" for i in range(150)])
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        results = list(executor.map(_claim_many, [str(db)] * 2, ["a", "b"], [100] * 2))
    issued = [key for keys in results for key in keys]
    assert len(issued) == 150 and len(set(issued)) == 150


def test_stock_generator_through_helper(tmp_path: Path) -> None:
    """The stock generator returns the order's keys from the pool and is idempotent on the order's key."""
    engine = plugin_database(tmp_path / "g.db")
    StockPool(engine, ManualClock()).import_keys("test-store", "product-1", ["S1", "S2", "S3"])
    order = fake_order(quantity=2)
    assert run_generator(StockGenerator, engine=engine, order=order).keys == ("S1", "S2")
    assert run_generator(StockGenerator, engine=engine, order=order).keys == ("S1", "S2")
    with pytest.raises(OutOfStock):
        run_generator(StockGenerator, engine=engine, order=fake_order(order_id="o-2", quantity=2))


def _cli_config(path: Path, stack: Any) -> Path:
    config = path / "daemon.yaml"
    store = {
        "name": "shop",
        "marketplace": "softstore",
        "api_url": stack.market.api_base,
        "api_key": stack.api_key,
        "products": {"serials": {"generator": "stock"}},
    }
    config.write_text(yaml.safe_dump({"database": {"url": stack.settings.database.url}, "stores": [store]}))
    return config


async def _settle(stack: Any, orders: list[str]) -> None:
    """Drain, then retry what a transient failure left in ``retry_wait`` (a delivery past its 5 s timeout on a busy
    CI machine, seen twice in full CI runs and never alone) until nothing is: the test is about keys, not about the
    first attempt's luck. A retried job sends its stored content, so the distinct-keys assertions still hold."""
    await stack.drain()
    for _ in range(5):
        jobs = [await stack.job(order_id) for order_id in orders]
        if not any(job.state == JobState.RETRY_WAIT.value for job in jobs):
            return
        await stack.advance_and_drain(1800)  # the longest step of the test stack's retry schedule: all due now


async def test_200_orders_150_keys_then_import_delivers_the_rest(
    make_stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """200 orders against 150 stock keys: 150 delivered with distinct keys, 50 wait, an import delivers them."""
    async with make_stack(
        database={"synchronous": "NORMAL"},
        products={"serials": {"generator": "stock", "options": {"low_stock_threshold": 10}}},
    ) as stack:
        stack.market.add_product("serials", count=1000)
        config = _cli_config(tmp_path, stack)
        keys_file = tmp_path / "keys.txt"
        keys_file.write_text("\n".join(f"SERIAL-{i:04d}" for i in range(150)) + "\nSERIAL-0000\n")
        assert (
            await anyio.to_thread.run_sync(
                main,
                ["stock", "import", "--config", str(config), "--store", "shop", "--product", "serials", str(keys_file)],
            )
            == 0
        )
        assert "imported 150 keys for shop/serials, skipped 1 duplicates" in capsys.readouterr().out
        raw = _database_bytes(Path(stack.settings.database.url.removeprefix("sqlite:///")))
        assert b"SERIAL-0" not in raw  # sealed by the import, with the daemon's key

        # Placed without the reference's own webhook client (one new TLS-ready client per call is slow), then
        # all 200 webhooks are posted concurrently over the stack's shared client.
        orders = [(await stack.market.place_order("serials", send_webhook=False)).id_order for _ in range(200)]
        answers = await asyncio.gather(*(stack.post(stack.market.webhook_payload(o)) for o in orders))
        assert {answer.status_code for answer in answers} == {200}
        await _settle(stack, orders)
        jobs = [await stack.job(order_id) for order_id in orders]
        states = [job.state for job in jobs]
        assert states.count(JobState.DELIVERED.value) == 150, sorted(
            (j.state, j.last_error or "") for j in jobs if j.state != JobState.DELIVERED.value
        )[:60]
        assert states.count(JobState.WAITING.value) == 50
        delivered = [
            stack.market.accepted(o).json["text"]
            for o, j in zip(orders, jobs, strict=True)
            if j.state == JobState.DELIVERED.value
        ]
        assert len(set(delivered)) == 150
        assert sum('"stock.low"' in line for line in stack.logs.getvalue().splitlines()) == 1

        assert await anyio.to_thread.run_sync(main, ["stock", "status", "--config", str(config)]) == 0
        assert capsys.readouterr().out.split("\n")[1].split() == ["shop", "serials", "0", "150", "50"]

        refill = tmp_path / "refill.csv"
        refill.write_text("key\n" + "\n".join(f"REFILL-{i:03d}" for i in range(60)) + "\n")
        assert (
            await anyio.to_thread.run_sync(
                main,
                ["stock", "import", "--config", str(config), "--store", "shop", "--product", "serials", str(refill)],
            )
            == 0
        )
        assert "50 waiting orders requeued" in capsys.readouterr().out
        stack.catch_up_with_cli()
        await _settle(stack, orders)
        jobs = [await stack.job(order_id) for order_id in orders]
        assert [(j.order_id, j.state, j.last_error) for j in jobs if j.state != JobState.DELIVERED.value] == []
        texts = [stack.market.accepted(o).json["text"] for o in orders]
        assert len(set(texts)) == 200
        assert not any(text in stack.logs.getvalue() for text in texts)  # keys never reach a log line


def test_cli_import_never_creates_a_key_file(tmp_path: Path) -> None:
    """``stock import`` before the daemon ever ran stores the keys without creating a key file (a root-owned one
    would lock the daemon out); the daemon's first start seals them."""
    from delivery_daemon.storage.rekey import seal_at_start

    db = tmp_path / "d.db"
    engine = plugin_database(db)
    config = tmp_path / "daemon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {"url": f"sqlite:///{db}"},
                "stores": [
                    {
                        "name": "shop",
                        "marketplace": "softstore",
                        "api_url": "http://127.0.0.1:9/api/v1",
                        "api_key": "k" * 40,
                        "products": {"serials": {"generator": "stock"}},
                    }
                ],
            }
        )
    )
    keys = tmp_path / "keys.txt"
    keys.write_text("PLAIN-KEY-0001\nPLAIN-KEY-0002\n")
    assert (
        main(
            [
                "stock",
                "import",
                "--config",
                str(config),
                "--store",
                "shop",
                "--product",
                "serials",
                "--no-sync",
                str(keys),
            ]
        )
        == 0
    )
    assert not (tmp_path / "d.db.key").exists()
    assert [lv.available for lv in StockPool(engine, ManualClock()).levels()] == [2]
    assert seal_at_start(engine, ManualClock(), _cipher()) == 2
