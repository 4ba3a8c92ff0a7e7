"""Rewriting many rows in short transactions, so that a running daemon waits for one batch at a time, never for
the whole job (sealing stock at start, ``delivery-daemon db reencrypt``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Table, and_, select


def rewrite_in_batches(
    engine: Engine,
    table: Table,
    columns: Sequence[ColumnElement[Any]],
    where: ColumnElement[bool],
    size: int,
    rewrite: Callable[[Connection, Sequence[Any]], None],
) -> int:
    """Call ``rewrite(conn, rows)`` for each batch of up to ``size`` rows of ``table`` that match ``where``, in
    ``id`` order; each row holds ``table.c.id`` and then ``columns``. Returns how many rows there were.

    Each batch is read and rewritten in one transaction that holds its rows (``FOR UPDATE`` on PostgreSQL; on SQLite
    every transaction is ``BEGIN IMMEDIATE``), so a concurrent writer never loses its write; if ``rewrite`` raises,
    that batch is rolled back and the error propagates (the batches before it stay done). Each batch starts after
    the previous one's last ``id``, so a row that still matches ``where`` after its rewrite is not read again.
    """
    done, last = 0, 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(table.c.id, *columns)
                .where(and_(table.c.id > last, where))
                .order_by(table.c.id)
                .limit(size)
                .with_for_update()
            ).all()
            if not rows:
                return done
            rewrite(conn, rows)
            done += len(rows)
            last = rows[-1][0]
