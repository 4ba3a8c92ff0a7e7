"""Sync generators run in threads, and a thread cannot be stopped: when a call's time budget runs out the job moves
on (Retry) but the thread goes on running. :class:`HungThreads` counts those abandoned, still-running threads per
product and refuses to start more past a limit, so a generator that hangs for ever holds at most ``limit`` threads
instead of one more per retry (the worker retries it for as long as the order lives).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio

from delivery_daemon.errors import Retry

HUNG_LIMIT = 4  # abandoned threads per product before its calls are refused


class HungThreads:
    """Run sync generator calls in a thread, counting the ones abandoned while still running."""

    def __init__(self, limit: int = HUNG_LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._hung = 0

    @property
    def hung(self) -> int:
        """Threads whose call was abandoned (budget ran out) and that have not finished yet."""
        with self._lock:
            return self._hung

    async def run(self, function: Callable[[Any], Any], argument: Any, *, name: str) -> Any:
        """``function(argument)`` in a worker thread; cancelling abandons the thread (counted until it ends).

        Raises Retry without starting a thread when ``limit`` abandoned threads are still running."""
        if self.hung >= self.limit:
            raise Retry(f"generator {name} has {self.limit} calls still running past their time budget")
        state = {"finished": False, "abandoned": False}

        def call(value: Any) -> Any:
            try:
                return function(value)
            finally:
                with self._lock:
                    state["finished"] = True
                    if state["abandoned"]:
                        self._hung -= 1

        try:
            return await anyio.to_thread.run_sync(call, argument, abandon_on_cancel=True)
        except BaseException:  # cancelled by the budget (or shutdown): the thread may still be running
            with self._lock:
                if not state["finished"]:
                    state["abandoned"] = True
                    self._hung += 1
            raise
