"""The stock pool: pre-made keys (Sellix's and Shoppy's "serials" products) imported by the seller, each issued
to exactly one order.

The database guarantees it, not the process: a claim selects ``n`` free ids and updates exactly those, taking only
rows nobody holds (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers with
``BEGIN IMMEDIATE``), inside a transaction that is rolled back unless the whole quantity was found. Claims are
idempotent per order: rows already held by the same ``order_key`` are returned first, so an order retried after a
crash receives the same keys.

Keys are sealed at rest: ``key`` holds the key encrypted with the daemon's cipher (AES-256-GCM, the row's
``stock/<store>/<product>/<key_hash>`` as associated data) and ``key_hash`` is HMAC-SHA256 of the key under the
database's random ``stock_hash_key`` (itself sealed, see :mod:`delivery_daemon.storage.vault`). ``(store, product_id,
key_hash)`` is unique, so an import never adds a key twice although the database never sees the key. Claims open the
keys and return plaintext. Rows written by earlier releases (plaintext, no ``key_hash``) are still claimable and are
sealed by :meth:`StockPool.seal`, which the daemon runs at start (see :mod:`delivery_daemon.storage.rekey`).

A shared pool (``pools.<name>`` in the configuration, drawn on by products of any store) is the same rows under the
owner :func:`pool_owner` gives: ``store`` is :data:`POOL_STORE`, a value no store's name can take, and
``product_id`` is the pool's name. Every claim on it, whichever store's order makes it, competes for the same rows,
so the one-order-per-key guarantee above holds across stores and replicas unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import ColumnElement

from delivery_daemon.clock import Clock
from delivery_daemon.errors import DeliveryDaemonError, OutOfStock, Retry
from delivery_daemon.storage import dialect
from delivery_daemon.storage.batches import rewrite_in_batches
from delivery_daemon.storage.cipher import PREFIX, Cipher, DecryptError
from delivery_daemon.storage.models import STOCK_KEYS as KEYS
from delivery_daemon.storage.vault import STOCK_HASH_KEY, VaultError, secret

log = structlog.get_logger("delivery_daemon.storage.stock_pool")

MAX_KEY_LENGTH = 1000
SEAL_BATCH = 500
CONTENDED_RETRY = 0.5  # seconds before a claim that lost a race for locked keys tries again
POOL_STORE = "@pool"
"""The ``store`` of a shared pool's rows: store names start with a letter or digit, so none is ``@pool``."""


def pool_owner(pool: str) -> tuple[str, str]:
    """The (store, product id) a shared pool's keys are stored under."""
    return POOL_STORE, pool


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


def _context(store: str, product_id: str, key_hash: str) -> str:
    """Associated data of a sealed key: a ciphertext moved to another row does not open."""
    return f"stock/{store}/{product_id}/{key_hash}"


def _order_counts(conn: Connection, store: str, product_id: str) -> None:
    """Make the count of keys left that a claim reads next agree with one order of the claims on the pool.

    SQLite runs one writer at a time already. On PostgreSQL two claims in flight (two replicas, or two stores on
    one shared pool) would each count the other's keys as free and could both see the low-stock crossing; a
    transaction-scoped advisory lock per pool, taken after the claim's own update, lets each count see every claim
    that took the lock before it, so exactly one claim crosses the threshold."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"stock/{store}/{product_id}".encode()).digest()
        conn.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))))


class StockPool:
    """Import, claim and count pre-made keys. Methods are synchronous (call them from a thread or a sync
    generator, which the daemon runs in a thread). Without a cipher (a PostgreSQL database with no encryption key
    configured) keys are stored as they are; ``key_hash`` and de-duplication work the same."""

    def __init__(self, engine: Engine, clock: Clock, cipher: Cipher | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.cipher = cipher

    def _insert_ignore(self) -> Any:
        return dialect.insert(self.engine.dialect.name, KEYS).on_conflict_do_nothing().returning(KEYS.c.id)

    def _hash_key(self, conn: Connection) -> bytes:
        return secret(conn, STOCK_HASH_KEY, self.cipher, self.clock.now())

    def _seal(self, store: str, product_id: str, key: str, key_hash: str) -> str:
        return key if self.cipher is None else self.cipher.seal(key, _context(store, product_id, key_hash))

    def _open(self, store: str, product_id: str, stored: str, key_hash: str | None) -> str:
        if not stored.startswith(PREFIX + ":"):
            return stored  # plaintext: a legacy row, or a database without a key
        if self.cipher is None or key_hash is None:
            raise StockError("stock keys are encrypted but no encryption key is configured")
        return self.cipher.open(stored, _context(store, product_id, key_hash))

    def import_keys(self, store: str, product_id: str, keys: list[str]) -> ImportResult:
        """Seal and add ``keys`` to the pool in one transaction; keys already present (or repeated) are skipped and
        counted (by ``key_hash``, so a key is recognised without being decrypted)."""
        now = self.clock.now()
        statement = self._insert_ignore()
        added = 0
        try:
            with self.engine.begin() as conn:
                hash_key = self._hash_key(conn)
                for key in dict.fromkeys(keys):
                    digest = hmac.new(hash_key, key.encode(), hashlib.sha256).hexdigest()
                    result = conn.execute(
                        statement,
                        {
                            "store": store,
                            "product_id": product_id,
                            "key": self._seal(store, product_id, key, digest),
                            "key_hash": digest,
                            "imported_at": now,
                        },
                    )
                    # Count the returned ids: psycopg reports rowcount -1 for a skipped ON CONFLICT row.
                    added += len(result.all())
        except VaultError as exc:
            raise StockError(str(exc)) from None
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc
        return ImportResult(added=added, duplicates=len(keys) - added)

    def move(self, store: str, product_id: str, to: tuple[str, str], *, batch: int = SEAL_BATCH) -> ImportResult:
        """Move the keys of ``(store, product_id)`` nobody holds to the owner ``to`` (a shared pool's
        :func:`pool_owner`), re-sealed for their new row, ``batch`` rows per transaction; keys already there are
        dropped from the old owner and counted as duplicates. Issued keys stay with the orders that hold them."""
        free = and_(KEYS.c.store == store, KEYS.c.product_id == product_id, KEYS.c.claimed_by.is_(None))
        statement = self._insert_ignore()
        added = 0

        def rehome(conn: Connection, rows: Sequence[Any]) -> None:
            nonlocal added
            hash_key = self._hash_key(conn)
            for row_id, stored, digest, imported_at in rows:
                plain = self._open(store, product_id, stored, digest)
                digest = digest or hmac.new(hash_key, plain.encode(), hashlib.sha256).hexdigest()
                values = {"store": to[0], "product_id": to[1], "key_hash": digest, "imported_at": imported_at}
                result = conn.execute(statement, {**values, "key": self._seal(*to, plain, digest)})
                added += len(result.all())
                conn.execute(delete(KEYS).where(KEYS.c.id == row_id))

        columns = [KEYS.c.key, KEYS.c.key_hash, KEYS.c.imported_at]
        try:
            moved = rewrite_in_batches(self.engine, KEYS, columns, free, batch, rehome)
        except (DecryptError, VaultError) as exc:
            raise StockError(str(exc)) from None
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc
        return ImportResult(added=added, duplicates=moved - added)

    def claim(
        self, store: str, product_id: str, order_key: str, count: int, *, low_threshold: int | None = None
    ) -> list[str]:
        """Exactly ``count`` keys (plaintext) for the order ``order_key``, or OutOfStock with nothing taken (Retry
        instead when enough keys are free but a concurrent claim holds some of them locked, on PostgreSQL).

        Calling again with the same ``order_key`` returns the same keys. When the claim takes the number of keys
        left from above ``low_threshold`` to at or below it, one ``stock.low`` event is logged. A key that does not
        decrypt raises StockError and nothing is taken.
        """
        free = and_(KEYS.c.store == store, KEYS.c.product_id == product_id, KEYS.c.claimed_by.is_(None))
        try:
            with self.engine.begin() as conn:
                held = conn.execute(
                    select(KEYS.c.key, KEYS.c.key_hash)
                    .where(and_(KEYS.c.store == store, KEYS.c.product_id == product_id, KEYS.c.claimed_by == order_key))
                    .order_by(KEYS.c.id)
                ).all()
                need = count - len(held)
                if need <= 0:
                    return [self._open(store, product_id, key, digest) for key, digest in held[:count]]
                # Two statements, not ``UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)``: PostgreSQL
                # may re-run that subquery per row and so take more than ``n`` keys.
                ids = (
                    conn.execute(
                        select(KEYS.c.id).where(free).order_by(KEYS.c.id).limit(need).with_for_update(skip_locked=True)
                    )
                    .scalars()
                    .all()
                )
                rows = conn.execute(
                    update(KEYS)
                    .where(and_(KEYS.c.id.in_(ids), KEYS.c.claimed_by.is_(None)))
                    .values(claimed_by=order_key, claimed_at=self.clock.now())
                    .returning(KEYS.c.id, KEYS.c.key, KEYS.c.key_hash)
                ).all()
                if len(rows) < need:
                    # Leaving the block with an exception rolls the partial claim back: nothing is taken.
                    free_now = conn.execute(select(func.count()).select_from(KEYS).where(free)).scalar_one()
                    if free_now >= need:
                        # Enough keys exist, but a concurrent claim (another replica) holds some of them locked and
                        # may yet roll back. Waiting for an import would strand this order while keys are free.
                        raise Retry(
                            f"{need} keys needed for product {product_id}: some are held by a concurrent claim",
                            after=CONTENDED_RETRY,
                        )
                    raise OutOfStock(f"{need} keys needed for product {product_id}, {len(rows)} left")
                if low_threshold is not None:
                    _order_counts(conn, store, product_id)
                # Opened inside the transaction: a key that does not decrypt is not taken either.
                keys = [self._open(store, product_id, key, digest) for key, digest in held]
                keys += [self._open(store, product_id, key, digest) for _id, key, digest in sorted(rows)]
                left = conn.execute(select(func.count()).select_from(KEYS).where(free)).scalar_one()
        except DecryptError as exc:
            raise StockError(str(exc)) from None
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc
        if low_threshold is not None and left <= low_threshold < left + len(rows):
            # One event per crossing of the pool, whichever store's order crossed it: a shared pool names itself.
            where = {"pool": product_id} if store == POOL_STORE else {"store": store, "product_id": product_id}
            log.warning("stock.low", **where, remaining=left, threshold=low_threshold)
        return keys

    def revoke(self, store: str, product_id: str, order_key: str) -> int:
        """Mark the keys issued to ``order_key`` revoked (they went out and their order was taken back): they stay
        taken, for good. How many were marked (0 when done before)."""
        return self._change(
            and_(KEYS.c.revoked_at.is_(None)), store, product_id, order_key, revoked_at=self.clock.now()
        )

    def release(self, store: str, product_id: str, order_key: str) -> int:
        """Give the keys issued to ``order_key`` back to the pool (its order was cancelled before any delivery
        attempt); a revoked key is never given back. How many were freed."""
        return self._change(
            and_(KEYS.c.revoked_at.is_(None)), store, product_id, order_key, claimed_by=None, claimed_at=None
        )

    def _change(self, where: Any, store: str, product_id: str, order_key: str, **values: Any) -> int:
        mine = and_(where, KEYS.c.store == store, KEYS.c.product_id == product_id, KEYS.c.claimed_by == order_key)
        try:
            with self.engine.begin() as conn:
                return int(conn.execute(update(KEYS).where(mine).values(**values)).rowcount)
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc

    def seal(self, *, rotate: bool = False, batch: int = SEAL_BATCH) -> int:
        """Seal the rows that need it, ``batch`` rows per transaction; returns how many were rewritten.

        Always: rows without ``key_hash`` (an earlier release's plaintext) and, with a cipher, plaintext keys.
        With ``rotate``: also keys sealed under an older key, re-sealed under the current one (key rotation).
        Logs ``stock.sealed`` with the count (never the keys)."""
        needs: list[ColumnElement[bool]] = [KEYS.c.key_hash.is_(None)]
        if self.cipher is not None:
            sealed_as = f"{PREFIX}:{self.cipher.current}:" if rotate else f"{PREFIX}:"
            needs.append(~KEYS.c.key.startswith(sealed_as, autoescape=True))  # a key id may contain "_"

        def reseal(conn: Connection, rows: Sequence[Any]) -> None:
            hash_key = self._hash_key(conn)
            for row_id, store, product_id, stored, digest in rows:
                plain = self._open(store, product_id, stored, digest)
                digest = digest or hmac.new(hash_key, plain.encode(), hashlib.sha256).hexdigest()
                conn.execute(
                    update(KEYS)
                    .where(KEYS.c.id == row_id)
                    .values(key=self._seal(store, product_id, plain, digest), key_hash=digest)
                )

        columns = [KEYS.c.store, KEYS.c.product_id, KEYS.c.key, KEYS.c.key_hash]
        try:
            sealed = rewrite_in_batches(self.engine, KEYS, columns, or_(*needs), batch, reseal)
        except (DecryptError, VaultError) as exc:
            raise StockError(str(exc)) from None
        except SQLAlchemyError as exc:
            raise StockError(f"database error: {type(exc).__name__}") from exc
        if sealed:
            log.info("stock.sealed", count=sealed, rotated=rotate, encrypted=self.cipher is not None)
        return sealed

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


__all__ = ["KEYS", "POOL_STORE", "ImportResult", "StockError", "StockLevel", "StockPool", "pool_owner", "read_keys"]
