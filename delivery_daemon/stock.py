"""The stock pool: pre-made keys (Sellix's and Shoppy's "serials" products) imported by the seller, each issued
to exactly one order.

The database guarantees it, not the process: a claim selects ``n`` free ids and updates exactly those, taking only
rows nobody holds (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers with
``BEGIN IMMEDIATE``), inside a transaction that is rolled back unless the whole quantity was found. Claims are
idempotent per order: rows already held by the same ``order_key`` are returned first, so an order retried after a
crash receives the same keys. ``(store, product_id, key)`` is unique, so an import never adds a key twice.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy import Engine, Index, Text, UniqueConstraint, and_, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel

from .clock import Clock
from .errors import DeliveryDaemonError, OutOfStock

log = structlog.get_logger("delivery_daemon.stock")

MAX_KEY_LENGTH = 1000


class StockKey(SQLModel, table=True):
    """One pre-made key; ``claimed_by`` is the idempotency key of the order it was issued to."""

    __tablename__ = "stock_keys"
    __table_args__ = (
        UniqueConstraint("store", "product_id", "key", name="uq_stock_keys_key"),
        Index("ix_stock_keys_free", "store", "product_id", "claimed_by"),
    )

    id: int | None = Field(default=None, primary_key=True)
    store: str = Field(max_length=64)
    product_id: str = Field(max_length=128)
    key: str = Field(sa_type=Text)
    imported_at: float
    claimed_by: str | None = Field(default=None, max_length=256)
    claimed_at: float | None = None


KEYS = StockKey.__table__  # type: ignore[attr-defined]


class StockError(DeliveryDaemonError):
    """The stock pool could not be read or written (translated from SQLAlchemy), or an import file is unusable."""


@dataclass(frozen=True)
class ImportResult:
    added: int
    duplicates: int


@dataclass(frozen=True)
class StockLevel:
    store: str
    product_id: str
    available: int
    issued: int


def read_keys(path: Path) -> list[str]:
    """Keys from a text file (one per line; blank lines and ``#`` comments skipped) or a ``.csv`` file (the
    ``key`` column if the header has one, else the first column). Raises StockError naming the problem."""
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StockError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix.lower() == ".csv":
        rows = [row for row in csv.reader(io.StringIO(raw)) if row and any(cell.strip() for cell in row)]
        column = 0
        if rows and "key" in [cell.strip().lower() for cell in rows[0]]:
            column = [cell.strip().lower() for cell in rows[0]].index("key")
            rows = rows[1:]
        keys = [row[column].strip() if column < len(row) else "" for row in rows]
    else:
        keys = [line.strip() for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for number, key in enumerate(keys, start=1):
        if not key:
            raise StockError(f"{path}: entry {number} is empty")
        if len(key) > MAX_KEY_LENGTH:
            raise StockError(f"{path}: entry {number} is longer than {MAX_KEY_LENGTH} characters")
    return keys


class StockPool:
    """Import, claim and count pre-made keys. Methods are synchronous (call them from a thread or a sync
    generator, which the daemon runs in a thread)."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def _insert_ignore(self) -> object:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(KEYS).on_conflict_do_nothing().returning(KEYS.c.id)
        return sqlite.insert(KEYS).on_conflict_do_nothing().returning(KEYS.c.id)

    def import_keys(self, store: str, product_id: str, keys: list[str]) -> ImportResult:
        """Add ``keys`` to the pool in one transaction; keys already present (or repeated) are skipped and counted."""
        now = self.clock.now()
        statement = self._insert_ignore()
        added = 0
        try:
            with self.engine.begin() as conn:
                for key in dict.fromkeys(keys):
                    result = conn.execute(statement, {"store": store, "product_id": product_id, "key": key,
                                                      "imported_at": now})  # type: ignore[call-overload]
                    # Count the returned ids: psycopg reports rowcount -1 for a skipped ON CONFLICT row.
                    added += len(result.all())
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc
        return ImportResult(added=added, duplicates=len(keys) - added)

    def claim(self, store: str, product_id: str, order_key: str, count: int, *,
              low_threshold: int | None = None) -> list[str]:
        """Exactly ``count`` keys for the order ``order_key``, or OutOfStock with nothing taken.

        Calling again with the same ``order_key`` returns the same keys. When the claim takes the number of keys
        left from above ``low_threshold`` to at or below it, one ``stock.low`` event is logged.
        """
        free = and_(KEYS.c.store == store, KEYS.c.product_id == product_id, KEYS.c.claimed_by.is_(None))
        try:
            with self.engine.begin() as conn:
                held = conn.execute(
                    select(KEYS.c.key).where(and_(KEYS.c.store == store, KEYS.c.product_id == product_id,
                                                  KEYS.c.claimed_by == order_key)).order_by(KEYS.c.id)
                ).scalars().all()
                need = count - len(held)
                if need <= 0:
                    return list(held[:count])
                # Two statements, not ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)``: PostgreSQL
                # may re-run that subquery per row and so take more than ``n`` keys.
                ids = conn.execute(
                    select(KEYS.c.id).where(free).order_by(KEYS.c.id).limit(need).with_for_update(skip_locked=True)
                ).scalars().all()
                rows = conn.execute(
                    update(KEYS).where(and_(KEYS.c.id.in_(ids), KEYS.c.claimed_by.is_(None)))
                    .values(claimed_by=order_key, claimed_at=self.clock.now())
                    .returning(KEYS.c.id, KEYS.c.key)
                ).all()
                if len(rows) < need:
                    # Leaving the block with an exception rolls the partial claim back: nothing is taken.
                    raise OutOfStock(f"{need} keys needed for product {product_id}, {len(rows)} left")
                left = conn.execute(select(func.count()).select_from(KEYS).where(free)).scalar_one()
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc
        if low_threshold is not None and left <= low_threshold < left + len(rows):
            log.warning("stock.low", store=store, product_id=product_id, remaining=left, threshold=low_threshold)
        return [*held, *(key for _id, key in sorted(rows))]

    def available(self, store: str, product_id: str) -> int:
        """How many keys of the product nobody holds (0 when none were imported)."""
        free = and_(KEYS.c.store == store, KEYS.c.product_id == product_id, KEYS.c.claimed_by.is_(None))
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(KEYS).where(free)).scalar_one())
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc

    def levels(self, store: str | None = None) -> list[StockLevel]:
        """Available and issued keys per (store, product), sorted."""
        free = case((KEYS.c.claimed_by.is_(None), 1), else_=0)
        query = select(KEYS.c.store, KEYS.c.product_id, func.sum(free), func.count())
        if store is not None:
            query = query.where(KEYS.c.store == store)
        query = query.group_by(KEYS.c.store, KEYS.c.product_id).order_by(KEYS.c.store, KEYS.c.product_id)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc
        return [StockLevel(s, p, int(a), int(total) - int(a)) for s, p, a, total in rows]


__all__ = ["ImportResult", "StockError", "StockKey", "StockLevel", "StockPool", "read_keys"]
