"""``delivery-daemon db migrate --to``: a SQLite database copied into PostgreSQL, verified, or refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import Table, select
from sqlalchemy.engine import make_url

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.jobs import Transition
from delivery_daemon.storage.models import ATTEMPTS, JOBS, JobState
from delivery_daemon.storage.queue import JobQueue

pytestmark = pytest.mark.postgres


async def sqlite_with_history(path: Path) -> str:
    """A daemon database with delivered, retrying and queued orders and their attempts."""
    url = f"sqlite:///{path}"
    engine = create_db_engine(url)
    create_schema(engine)
    queue = JobQueue(engine, ManualClock())
    for n in range(7):
        await queue.enqueue(
            IncomingOrder(
                store="shop", marketplace="softstore", order_id=f"o{n}", product_id="p", payload={"token": f"t{n}"}
            )
        )
    jobs = await queue.claim("w", 30, 4)
    for job in jobs[:3]:
        await queue.save_content(job, "w", f'{{"text":"KEY-{job.order_id}"}}', 1.0)
        await queue.transition(job, "w", Transition(JobState.DELIVERED, "deliver", "delivered", http_status=200))
    await queue.transition(
        jobs[3],
        "w",
        Transition(
            JobState.RETRY_WAIT, "deliver", "retry", due_at=9e9, count_attempt=True, error="SoftStore answered 500"
        ),
    )
    queue.close()
    engine.dispose()
    return url


def write_config(tmp_path: Path, db_url: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url}, "stores": []}))
    return config


def rows(url: str, table: Table) -> list[dict[str, object]]:
    engine = create_db_engine(url)
    with engine.connect() as conn:
        result = [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.id))]
    engine.dispose()
    return result


async def test_copy_is_identical_and_ids_continue(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Jobs (with stored content) and attempts arrive row for row; new jobs on PostgreSQL get fresh ids."""
    source = await sqlite_with_history(tmp_path / "d.db")
    plain = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    assert main(["db", "migrate", "--config", str(write_config(tmp_path, source)), "--to", plain]) == 0
    out = capsys.readouterr().out
    assert "jobs: 7 rows" in out and "delivered 3" in out
    assert rows(pg_url, JOBS) == rows(source, JOBS)
    assert rows(pg_url, ATTEMPTS) == rows(source, ATTEMPTS)
    engine = create_db_engine(pg_url)
    queue = JobQueue(engine, ManualClock())
    added = await queue.enqueue(IncomingOrder(store="shop", marketplace="softstore", order_id="new", product_id="p"))
    assert added.created and added.job_id == 8
    queue.close()
    engine.dispose()


async def test_refuses_a_target_that_has_jobs(tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A second copy into the same database changes nothing and says why (exit 1)."""
    config = write_config(tmp_path, await sqlite_with_history(tmp_path / "d.db"))
    assert main(["db", "migrate", "--config", str(config), "--to", pg_url]) == 0
    before = rows(pg_url, ATTEMPTS)
    assert main(["db", "migrate", "--config", str(config), "--to", pg_url]) == 1
    assert "already holds 7 jobs" in capsys.readouterr().err
    assert rows(pg_url, ATTEMPTS) == before


def test_target_must_be_postgresql(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A non-PostgreSQL --to is a usage error (exit 2, one line) and touches no database."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'd.db'}")
    assert main(["db", "migrate", "--config", str(config), "--to", f"sqlite:///{tmp_path / 'other.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be a PostgreSQL URL" in err
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "d.db").exists()


async def test_encrypted_orders_and_stock_stay_readable(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows encrypted with the key generated next to the SQLite file are copied as stored; the command names that
    key file, and with it configured the orders read back on PostgreSQL. Stock keys are copied too."""
    from delivery_daemon.storage.cipher import Cipher, create_key_file, parse_keys
    from delivery_daemon.storage.stock_pool import KEYS, StockPool

    database = tmp_path / "d.db"
    source = f"sqlite:///{database}"
    key_file = tmp_path / "d.db.key"
    create_key_file(key_file)
    cipher = Cipher(parse_keys(key_file.read_text(), "test"))
    engine = create_db_engine(source)
    create_schema(engine)
    queue = JobQueue(engine, ManualClock(), cipher)
    added = await queue.enqueue(
        IncomingOrder(
            store="shop", marketplace="softstore", order_id="o1", product_id="p", payload={"token": "secret-token"}
        )
    )
    queue.close()
    StockPool(engine, ManualClock(), cipher).import_keys("shop", "p", ["STOCK-1"])
    engine.dispose()
    assert "secret-token" not in str(rows(source, JOBS))

    assert main(["db", "migrate", "--config", str(write_config(tmp_path, source)), "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert f"set security.encryption_key_file to {key_file.resolve()}" in out
    assert "stock_keys: 1 rows" in out
    assert rows(pg_url, KEYS) == rows(source, KEYS)
    target = create_db_engine(pg_url)
    copied = JobQueue(target, ManualClock(), cipher)
    job = await copied.get(added.job_id)
    assert job is not None and "secret-token" in job.payload
    copied.close()
    pool = StockPool(target, ManualClock(), cipher)  # the sealed hash key travelled with the sealed keys
    assert pool.import_keys("shop", "p", ["STOCK-1"]).duplicates == 1
    assert pool.claim("shop", "p", "shop:o1", 1) == ["STOCK-1"]
    target.dispose()
