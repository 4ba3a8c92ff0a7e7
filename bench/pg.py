"""Ingest and drain on PostgreSQL with 1 and 3 daemon replicas sharing one database (issue 8's benchmark rows).

The server is a throw-away one from ``tests/support/pg.py`` (initdb in a temporary directory, loopback port) with its
durable defaults (``fsync=on``, synchronous commit): the realistic figure. Every replica count and phase gets
a fresh database.

* **Ingest**: ``n`` receiver-only daemons; the 32 connections are split over them (one load process per replica,
  all at once); req/s is the sum, p50 the median and p99 the worst of the replicas.
* **Drain**: ``jobs`` webhooks taken in by one receiver-only daemon, then ``n`` daemons with their workers started
  together on the database; rate = jobs / (last accepted delivery - the first replica ready). Counting from the
  first replica is conservative for ``n > 1`` (the others are still starting).

Skipped, with the reason in the results, when PostgreSQL's binaries are not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .loadgen import run_load
from .processes import ServerProcess, start_server
from .scenarios import STORE, Bench, _post_all, _signed_bodies, _wait_delivered


@contextlib.contextmanager
def _replicas(bench: Bench, name: str, url: str, count: int, *, start_worker: bool) -> Iterator[list[ServerProcess]]:
    """``count`` daemons on database ``url``, started concurrently (each start takes seconds on a busy machine)."""
    with contextlib.ExitStack() as stack:
        managers = [
            start_server(
                "daemon",
                bench.daemon_spec(f"{name}-{i}", start_worker=start_worker, database={"url": url}),
                bench.workdir,
            )
            for i in range(count)
        ]
        with ThreadPoolExecutor(count) as pool:
            servers = list(pool.map(lambda manager: manager.__enter__(), managers))
        for manager in managers:
            stack.push(manager.__exit__)
        yield servers


def _ingest(bench: Bench, url: str, replicas: int, connections: int, duration: float) -> dict[str, Any]:
    with _replicas(bench, f"pg-ingest-{replicas}", url, replicas, start_worker=False) as servers:
        split = [connections // replicas + (1 if i < connections % replicas else 0) for i in range(replicas)]
        per_run = int(duration * 4000 / replicas) + 1000
        bodies = [_signed_bodies(bench, per_run, bench.workdir / f"pg-{replicas}-{i}.jsonl") for i in range(replicas)]
        warm = _signed_bodies(bench, 500, bench.workdir / f"pg-warm-{replicas}.jsonl")
        run_load(f"{servers[0].url}/webhooks/{STORE}", warm, connections=8, duration=1.0, use_wrk=bench.use_wrk)
        with ThreadPoolExecutor(replicas) as pool:
            runs = list(
                pool.map(
                    lambda i: run_load(
                        f"{servers[i].url}/webhooks/{STORE}",
                        bodies[i],
                        connections=split[i],
                        duration=duration,
                        use_wrk=bench.use_wrk,
                    ),
                    range(replicas),
                )
            )
    return {
        "rps": sum(r["rps"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": max(r["p99_ms"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] + r["non2xx"] for r in runs),
        "runs": runs,
    }


def _drain(bench: Bench, url: str, replicas: int, jobs: int) -> dict[str, Any]:
    payloads = bench.place_orders(jobs)
    with _replicas(bench, f"pg-fill-{replicas}", url, 1, start_worker=False) as [receiver]:
        asyncio.run(_post_all(f"{receiver.url}/webhooks/{STORE}", payloads))
    before = bench.delivered_count()
    with _replicas(bench, f"pg-drain-{replicas}", url, replicas, start_worker=True) as servers:
        ready = time.time()  # when all were ready: the first one has been draining since it was
        _wait_delivered(bench, before + jobs, 600)
        memory = [server.status() for server in servers]
    accepted = bench.accepted([p["id_order"] for p in payloads])
    if len(accepted) != jobs:
        raise RuntimeError(f"{jobs - len(accepted)} backlog orders were not delivered")
    first, last = min(accepted.values()), max(accepted.values())
    # The first delivery is at most a moment after the first replica was ready: use the earlier of the two.
    start = min(ready, first)
    return {
        "jobs": jobs,
        "drain_s": last - start,
        "deliveries_per_s": jobs / (last - start),
        "rss_peak_kb": max(m["VmHWM"] for m in memory),
    }


def pg(
    bench: Bench, *, replicas: tuple[int, ...] = (1, 3), jobs: int = 3000, duration: float = 10.0, connections: int = 32
) -> dict[str, Any]:
    """Ingest and drain figures per replica count, or ``{"skipped": reason}`` without PostgreSQL."""
    from tests.support import pg as pg_server

    reason = pg_server.unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    out: dict[str, Any] = {
        "durable": True,
        "connections": connections,
        "duration_s": duration,
        "jobs": jobs,
        "rows": [],
    }
    with pg_server.running_server(durable=True) as server:
        for count in replicas:
            # One database per phase: the ingest's webhooks are orders the marketplace never placed, and a drain on
            # the same database would first work through (and fail) every one of them.
            ingest_url, drain_url = server.create_database(f"ingest{count}"), server.create_database(f"drain{count}")
            row = {
                "replicas": count,
                "ingest": _ingest(bench, ingest_url, count, connections, duration),
                "drain": _drain(bench, drain_url, count, jobs),
            }
            out["rows"].append(row)
    return out
