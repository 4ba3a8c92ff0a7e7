"""Group commit: one database thread that runs every submitted operation, many per transaction.

With ``synchronous=FULL`` each commit waits for an fsync (about 4 ms on a small VPS disk), so a queue that commits
each webhook and each job transition on its own is capped at a few hundred commits per second, and every caller
queues behind every other caller's fsync. Here the database thread takes *everything that is waiting* (up to
``max_batch`` operations) and runs it in one transaction with one commit: at low load a batch is a single operation
and nothing waits longer than before; under load, concurrent callers share the fsync.

Contract of :meth:`GroupCommitter.run`:

* ``fn(conn)`` runs on the database thread, in a transaction shared with other callers' operations;
* its future resolves only after that transaction committed (so "answered only after its own commit" holds), and
  with ``fn``'s exception if it raised;
* one operation's failure does not undo the others: in a batch of several, each runs inside its own SAVEPOINT, so a
  raising operation leaves no trace while the rest commit;
* if the commit itself fails, every operation of the batch gets that error (none of them was stored);
* operations run in submission order, so an operation sees the effects of every earlier one.

Under a burst, per-operation work on this one thread becomes the limit, so two things are done per batch rather
than per operation: :meth:`GroupCommitter.run_merged` lets consecutive operations of the same kind run as one call
(enqueues: one multi-row ``INSERT … RETURNING`` instead of an INSERT and a SAVEPOINT each), falling back to one
savepoint per operation if that call raises; and the callers awaiting a batch are answered with one
``call_soon_threadsafe`` per event loop, not one loop wake-up each.

:meth:`GroupCommitter.run_alone` runs a function that opens its own connection (feature modules with tables of
their own, through :meth:`JobQueue.run`): it runs on the same thread, in submission order, but alone, after the
batch before it committed and before the next one begins, so it never waits on this thread's own write lock.

Savepoints and one writer thread are plain SQL and work unchanged on PostgreSQL.

The thread holds one connection from batch to batch instead of checking one out of the pool for each: measured on
SQLite (``bench``'s 2-core machine, a one-row transaction), the checkout, its reset and return cost ~300 µs of CPU per
transaction, more than the statement and the commit together. It holds no transaction between batches (so no lock
and no snapshot), and after a batch fails it is closed and the next batch checks out a new one, which is how a
connection broken by a database restart is replaced (``pool_pre_ping`` tests the new one on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

T = TypeVar("T")

log = structlog.get_logger("delivery_daemon.storage.group_commit")

DEFAULT_MAX_BATCH = 128
"""Operations per transaction at most: bounds how long the first operation of a big batch waits for its commit."""


Merge = Callable[[Connection, list[Any]], list[Any]]
"""``merge(conn, items)`` does the work of several operations at once and returns one result per item, in order."""


@dataclass
class _Operation(Generic[T]):
    fn: Callable[[Connection], T]
    write: bool
    alone: Callable[[], T] | None = None
    # Set by submit()/run_alone() only: callers on a loop (run, run_merged) use ``waiter``, and a Future (a lock
    # and a condition) per webhook would be built for nothing.
    future: concurrent.futures.Future[T] | None = None
    merge: Merge | None = None
    item: Any = None
    # Set by run(): the caller's loop and asyncio future, resolved in one loop callback per batch (not one
    # call_soon_threadsafe, i.e. one self-pipe write and loop wake-up, per operation).
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[T] | None = None

    def start(self) -> bool:
        """False if the caller gave up (cancelled) before the operation began: it is then skipped."""
        if self.waiter is not None:
            return not self.waiter.cancelled()
        assert self.future is not None
        return self.future.set_running_or_notify_cancel()


_Outcome = tuple[_Operation[Any], Any, BaseException | None]


@dataclass
class BatchStats:
    """Counters for tests and the benchmark: how many transactions ran, holding how many operations."""

    transactions: int = 0
    operations: int = 0
    largest: int = 0
    merged: int = 0
    """Operations done by a merged statement (see :meth:`GroupCommitter.run_merged`)."""
    fell_back: int = 0
    """Operations whose merged statement raised, so that each ran alone."""


class GroupCommitter:
    """Runs ``fn(conn)`` operations on one dedicated thread, batching all that are waiting into one transaction."""

    def __init__(self, engine: Engine, *, max_batch: int = DEFAULT_MAX_BATCH, name: str = "db") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.engine = engine
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._inbox: queue.SimpleQueue[_Operation[Any] | None] = queue.SimpleQueue()
        self._conn: Connection | None = None  # the database thread's own, between batches (see the module doc)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Connection], T], *, write: bool = True) -> concurrent.futures.Future[T]:
        """Queue ``fn`` for the database thread; ``write=False`` marks a read that needs no commit."""
        if self._closed:
            raise RuntimeError("the database thread is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._inbox.put(_Operation(fn, write, future=future))
        return future

    async def run(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """``fn(conn)``'s result, once the transaction it ran in has committed."""
        return await self._await(_Operation(fn, write))

    async def run_merged(self, fn: Callable[[Connection], T], merge: Merge, item: Any) -> T:
        """Like :meth:`run` (a write), but consecutive operations of one batch with the same ``merge`` run as one
        ``merge(conn, items)`` call (e.g. one multi-row INSERT instead of one INSERT and one SAVEPOINT each).

        If the merged call raises, it leaves no trace and each operation runs alone as ``fn(conn)`` in its own
        savepoint, so one bad item fails only its own caller. ``merge`` must do exactly what the ``fn`` of each
        item would have done, in order.
        """
        return await self._await(_Operation(fn, True, merge=merge, item=item))

    async def _await(self, operation: _Operation[T]) -> T:
        if self._closed:
            raise RuntimeError("the database thread is closed")
        operation.loop = asyncio.get_running_loop()
        operation.waiter = operation.loop.create_future()
        self._inbox.put(operation)
        return await operation.waiter

    async def run_alone(self, fn: Callable[[], T]) -> T:
        """``fn()``'s result; ``fn`` manages its own connection and runs outside any batch."""
        if self._closed:
            raise RuntimeError("the database thread is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._inbox.put(_Operation(lambda _conn: fn(), True, alone=fn, future=future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Finish every operation already submitted, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
        self._thread.join()

    # -- the database thread ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._serve()
        finally:
            self._drop_connection()

    def _serve(self) -> None:
        pending: _Operation[Any] | None = None
        while True:
            first = pending if pending is not None else self._inbox.get()
            pending = None
            if first is None:
                return
            if first.alone is not None:
                self._execute_alone(first)
                continue
            batch: list[_Operation[Any]] = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                if more.alone is not None:  # ends this batch; runs right after its commit
                    pending = more
                    break
                batch.append(more)
            self._execute([op for op in batch if op.start()])
            if stop:
                return

    @staticmethod
    def _execute_alone(op: _Operation[Any]) -> None:
        assert op.future is not None
        if not op.future.set_running_or_notify_cancel():
            return
        assert op.alone is not None
        try:
            op.future.set_result(op.alone())
        except Exception as exc:
            op.future.set_exception(exc)

    def _execute(self, batch: list[_Operation[Any]]) -> None:
        if not batch:
            return
        outcomes: list[_Outcome] = []
        try:
            if self._conn is None:
                self._conn = self.engine.connect()
            conn = self._conn
            if not any(op.write for op in batch):
                transaction = conn.begin()
                try:
                    outcomes = self._apply(conn, batch, isolate=False)
                finally:
                    transaction.rollback()  # reads only: nothing to keep, and the connection stays idle
            else:
                with conn.begin():
                    outcomes = self._apply(conn, batch, isolate=len(batch) > 1)
        except Exception as exc:  # BEGIN, a lone operation or COMMIT failed: nothing of this batch is stored
            self._drop_connection()
            self._answer([(op, None, exc) for op in batch])
            return
        self.stats.transactions += 1
        self.stats.operations += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        self._answer(outcomes)

    def _drop_connection(self) -> None:
        """Give the held connection back (the pool discards it if it was invalidated); the next batch takes one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection cannot fail the batch that found it broken
                conn.close()

    @staticmethod
    def _answer(outcomes: list[_Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            op, value, error = outcome
            if op.loop is not None:
                by_loop.setdefault(op.loop, []).append(outcome)
                continue
            assert op.future is not None
            if error is None:
                op.future.set_result(value)
            else:
                op.future.set_exception(error)
        for loop, resolved in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, resolved)

    def _apply(self, conn: Connection, batch: list[_Operation[Any]], *, isolate: bool) -> list[_Outcome]:
        """Run each operation; with ``isolate``, each inside a SAVEPOINT so that a failing one leaves no trace.

        Without ``isolate`` (a lone write, or reads only) an error of a lone write propagates and rolls back the
        whole transaction, which then holds nothing else; a read's error is simply its own.
        """
        if len(batch) == 1 and batch[0].write:
            return [(batch[0], batch[0].fn(conn), None)]
        outcomes: list[_Outcome] = []
        index = 0
        while index < len(batch):
            op = batch[index]
            end = index + 1
            while isolate and op.merge is not None and end < len(batch) and batch[end].merge == op.merge:
                end += 1
            if end - index > 1 and self._apply_merged(conn, batch[index:end], outcomes):
                index = end
                continue
            for single in batch[index:end]:
                outcomes.append(self._apply_one(conn, single, isolate))
            index = end
        return outcomes

    def _apply_merged(self, conn: Connection, run: list[_Operation[Any]], outcomes: list[_Outcome]) -> bool:
        """Do ``run`` with one merge call in a savepoint; False (and no trace left) if it raised."""
        merge = run[0].merge
        assert merge is not None
        try:
            with conn.begin_nested():
                values = merge(conn, [op.item for op in run])
        except Exception as exc:  # e.g. one row the database refuses: each operation then runs alone
            log.debug("group_commit.merge_fell_back", operations=len(run), error=type(exc).__name__)
            self.stats.fell_back += len(run)
            return False
        outcomes.extend((op, value, None) for op, value in zip(run, values, strict=True))
        self.stats.merged += len(run)
        return True

    @staticmethod
    def _apply_one(conn: Connection, op: _Operation[Any], isolate: bool) -> _Outcome:
        try:
            if isolate:
                with conn.begin_nested():
                    value = op.fn(conn)
            else:
                value = op.fn(conn)
            return (op, value, None)
        except Exception as exc:
            return (op, None, exc)


def _resolve(outcomes: list[_Outcome]) -> None:
    """On the caller's loop: answer every waiter of a batch (skipping those whose caller gave up)."""
    for op, value, error in outcomes:
        waiter = op.waiter
        if waiter is None or waiter.done():
            continue
        if error is None:
            waiter.set_result(value)
        else:
            waiter.set_exception(error)
