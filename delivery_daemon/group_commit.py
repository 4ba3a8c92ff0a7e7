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

:meth:`GroupCommitter.run_alone` runs a function that opens its own connection (feature modules with tables of
their own, through :meth:`JobQueue.run`): it runs on the same thread, in submission order, but alone, after the
batch before it committed and before the next one begins, so it never waits on this thread's own write lock.

Savepoints and one writer thread are plain SQL and work unchanged on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

T = TypeVar("T")

DEFAULT_MAX_BATCH = 128
"""Operations per transaction at most: bounds how long the first operation of a big batch waits for its commit."""


@dataclass
class _Operation(Generic[T]):
    fn: Callable[[Connection], T]
    write: bool
    alone: Callable[[], T] | None = None
    future: concurrent.futures.Future[T] = field(default_factory=concurrent.futures.Future)


_Outcome = tuple[_Operation[Any], Any, BaseException | None]


@dataclass
class BatchStats:
    """Counters for tests and the benchmark: how many transactions ran, holding how many operations."""

    transactions: int = 0
    operations: int = 0
    largest: int = 0


class GroupCommitter:
    """Runs ``fn(conn)`` operations on one dedicated thread, batching all that are waiting into one transaction."""

    def __init__(self, engine: Engine, *, max_batch: int = DEFAULT_MAX_BATCH, name: str = "db") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.engine = engine
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._inbox: queue.SimpleQueue[_Operation[Any] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Connection], T], *, write: bool = True) -> concurrent.futures.Future[T]:
        """Queue ``fn`` for the database thread; ``write=False`` marks a read that needs no commit."""
        if self._closed:
            raise RuntimeError("the database thread is closed")
        operation: _Operation[T] = _Operation(fn, write)
        self._inbox.put(operation)
        return operation.future

    async def run(self, fn: Callable[[Connection], T], *, write: bool = True) -> T:
        """``fn(conn)``'s result, once the transaction it ran in has committed."""
        return await asyncio.wrap_future(self.submit(fn, write=write))

    async def run_alone(self, fn: Callable[[], T]) -> T:
        """``fn()``'s result; ``fn`` manages its own connection and runs outside any batch."""
        if self._closed:
            raise RuntimeError("the database thread is closed")
        operation: _Operation[T] = _Operation(lambda _conn: fn(), True, alone=fn)
        self._inbox.put(operation)
        return await asyncio.wrap_future(operation.future)

    def close(self) -> None:
        """Finish every operation already submitted, then stop the thread."""
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
        self._thread.join()

    # -- the database thread ---------------------------------------------------------------------------------

    def _loop(self) -> None:
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
            self._execute([op for op in batch if op.future.set_running_or_notify_cancel()])
            if stop:
                return

    @staticmethod
    def _execute_alone(op: _Operation[Any]) -> None:
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
            if not any(op.write for op in batch):
                with self.engine.connect() as conn:
                    outcomes = self._apply(conn, batch, isolate=False)
            else:
                with self.engine.begin() as conn:
                    outcomes = self._apply(conn, batch, isolate=len(batch) > 1)
        except Exception as exc:  # BEGIN, a lone operation or COMMIT failed: nothing of this batch is stored
            for op in batch:
                op.future.set_exception(exc)
            return
        self.stats.transactions += 1
        self.stats.operations += len(batch)
        self.stats.largest = max(self.stats.largest, len(batch))
        for op, value, error in outcomes:
            if error is None:
                op.future.set_result(value)
            else:
                op.future.set_exception(error)

    @staticmethod
    def _apply(conn: Connection, batch: list[_Operation[Any]], *, isolate: bool) -> list[_Outcome]:
        """Run each operation; with ``isolate``, each inside a SAVEPOINT so that a failing one leaves no trace.

        Without ``isolate`` (a lone write, or reads only) an error of a lone write propagates and rolls back the
        whole transaction, which then holds nothing else; a read's error is simply its own.
        """
        if len(batch) == 1 and batch[0].write:
            return [(batch[0], batch[0].fn(conn), None)]
        outcomes: list[_Outcome] = []
        for op in batch:
            try:
                if isolate:
                    with conn.begin_nested():
                        value = op.fn(conn)
                else:
                    value = op.fn(conn)
                outcomes.append((op, value, None))
            except Exception as exc:
                outcomes.append((op, None, exc))
        return outcomes
