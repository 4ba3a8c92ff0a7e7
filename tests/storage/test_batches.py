"""Rewriting rows in batches: id order, one transaction per batch, no row read twice, a failed batch undone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, insert, select, update

from delivery_daemon.storage.batches import rewrite_in_batches
from delivery_daemon.storage.engine import create_db_engine

ITEMS = Table("items", MetaData(), Column("id", Integer, primary_key=True), Column("value", String, nullable=False))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    built = create_db_engine(f"sqlite:///{tmp_path / 'b.db'}")
    ITEMS.metadata.create_all(built)
    with built.begin() as conn:
        conn.execute(insert(ITEMS), [{"id": i, "value": "old" if i % 2 else "new"} for i in range(1, 11)])
    yield built
    built.dispose()


def values(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(ITEMS.c.value).order_by(ITEMS.c.id)).scalars())


def test_matching_rows_in_id_order_and_batches_of_size(engine: Engine) -> None:
    """Only rows matching ``where`` are passed, up to ``size`` at a time, in id order; the count is returned."""
    seen: list[list[int]] = []

    def rewrite(conn: Connection, rows: Sequence[Any]) -> None:
        seen.append([row.id for row in rows])
        conn.execute(update(ITEMS).where(ITEMS.c.id.in_([row.id for row in rows])).values(value="new"))

    assert rewrite_in_batches(engine, ITEMS, [], ITEMS.c.value == "old", 2, rewrite) == 5
    assert seen == [[1, 3], [5, 7], [9]]
    assert values(engine) == ["new"] * 10


def test_a_row_still_matching_after_its_rewrite_is_not_read_again(engine: Engine) -> None:
    """A rewrite that leaves rows matching does not loop: each batch starts after the previous one's last id."""
    calls: list[int] = []
    done = rewrite_in_batches(engine, ITEMS, [], ITEMS.c.value == "old", 3, lambda _conn, rows: calls.append(len(rows)))
    assert (done, calls) == (5, [3, 2])


def test_a_failing_batch_is_undone_and_earlier_ones_stay(engine: Engine) -> None:
    """The batch whose rewrite raises leaves no trace; the batches before it are committed."""

    def rewrite(conn: Connection, rows: Sequence[Any]) -> None:
        conn.execute(update(ITEMS).where(ITEMS.c.id.in_([row.id for row in rows])).values(value="new"))
        if rows[0].id > 1:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        rewrite_in_batches(engine, ITEMS, [], ITEMS.c.value == "old", 2, rewrite)
    assert values(engine) == ["new", "new", "new", "new", "old", "new", "old", "new", "old", "new"]
