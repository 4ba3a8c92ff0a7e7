"""Run an ASGI app under uvicorn on a loopback socket, bound before the server starts.

Binding the socket ourselves (port 0 by default) gives the caller the real port before any request can arrive,
which the demo, the tests and the benchmarks all need to wire the daemon and the reference marketplace together.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.types import ASGIApp


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP. Without it
    # a response written as headers then body waits for the client's delayed ACK: ~40 ms on every request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets on Linux
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def settle_heap() -> int:
    """Collect once, then hide every object alive now from the cyclic collector (:func:`gc.freeze`); the count.

    Call it once a server has started (and again after it rebuilt a large part of itself): the imports, the
    app and its configuration are then never walked again. Under load, a webhook's objects outlive the young
    generations while it waits for its commit, so full collections run every few hundred requests; each walked
    the whole start-up heap, ~45 ms, and they were the whole p99 of ingest (docs/performance.md, item 20). Objects
    frozen here are still freed when their last reference goes; only cycles among them are never collected.
    """
    gc.unfreeze()  # a second call re-examines what the first one froze
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@dataclass
class RunningServer:
    """A server that is accepting connections at ``url``."""

    url: str
    port: int
    server: uvicorn.Server


def _config(app: ASGIApp, **options: object) -> uvicorn.Config:
    # log_config=None: uvicorn leaves logging alone (its own config sends plain text to stderr); its records reach the
    # root logger, where configure_logging (when called) renders them like every other line.
    defaults: dict[str, Any] = {"log_level": "warning", "access_log": False, "lifespan": "on", "log_config": None}
    defaults.update(options)
    return uvicorn.Config(app, **defaults)


@contextlib.asynccontextmanager
async def serve(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, **options: object
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` in the current event loop for the duration of the block."""
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # surfaces the start-up error
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.005)
        yield RunningServer(url=f"http://{host}:{bound_port}", port=bound_port, server=server)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.contextmanager
def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0, **options: object) -> Iterator[RunningServer]:
    """Serve ``app`` from a background thread with its own event loop (for synchronous callers and tests)."""
    ready = threading.Event()
    stop: asyncio.Event | None = None
    holder: dict[str, object] = {}

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            async with serve(app, host, port, **options) as running:
                holder["running"] = running
                holder["loop"] = asyncio.get_running_loop()
                ready.set()
                await stop.wait()
        except BaseException as exc:
            holder["error"] = exc
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True, name="serve-in-thread")
    thread.start()
    ready.wait(30)
    error = holder.get("error")
    if isinstance(error, BaseException):
        raise RuntimeError("server failed to start") from error
    running = holder["running"]
    assert isinstance(running, RunningServer)
    try:
        yield running
    finally:
        loop = holder["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop) and stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
