"""``/healthz``: the process answers. ``/readyz``: the database takes a write lock and the worker is running."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from delivery_daemon.pipeline.worker import Worker
from delivery_daemon.storage.jobs import QueueError
from delivery_daemon.storage.queue import JobQueue


class ReadinessParts(Protocol):
    """What ``/readyz`` reads of the running daemon (``app.state.daemon``, a
    :class:`~delivery_daemon.compose.Daemon`)."""

    queue: JobQueue
    worker: Worker


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    daemon: ReadinessParts = request.app.state.daemon
    problems: list[str] = []
    try:
        await daemon.queue.check_writable()
    except QueueError:
        problems.append("database not writable")
    if not daemon.worker.running:
        problems.append("worker not running")
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


def routes() -> list[Route]:
    return [Route("/healthz", healthz), Route("/readyz", readyz)]
