"""Growth: does taking an order in, and claiming it, get slower as the database fills up?

A database per size is filled (delivered jobs with one attempt each, bulk-inserted with ``executemany``: the shape
of a daemon's history, then written out to disk), and at each size the same work is timed
through :class:`~delivery_daemon.storage.queue.JobQueue`: ``ops`` enqueues sent 32 at a time (so group commit applies as
in production), then claiming them all in batches of 32; the measured jobs are deleted afterwards, so every
repeat sees the same size. It runs with the default ``synchronous=FULL`` (what the daemon pays) and with
``synchronous=OFF`` (the SQL and index cost alone, which an fsync of several ms would otherwise hide); each repeat
measures every size and mode in turn, and the figure is the median of the repeats. Each figure is compared with
the smallest size of the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from delivery_daemon.clock import SystemClock
from delivery_daemon.order import IncomingOrder
from delivery_daemon.storage.engine import create_db_engine, create_schema
from delivery_daemon.storage.queue import JobQueue

PAYLOAD = json.dumps(
    {"delivery_url": "https://softstore.example/api/v1/orders/delivery/" + "a" * 64, "token": "b" * 64}
)
CONTENT = json.dumps({"text": "Thank you for your order:\nABCDE-FGHIJ-KLMNO-PQRST", "keys": ["ABCDE-FGHIJ"]})


def fill(path: Path, rows: int, chunk: int = 100_000) -> None:
    """Fill a new database with ``rows`` delivered jobs (and one attempt each): bulk inserts, one transaction per
    chunk, then written out to disk."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # filling is set-up, not measured
        now = time.time() - 86_400
        for low in range(0, rows, chunk):
            high = min(rows, low + chunk)
            with conn:
                conn.executemany(
                    "INSERT INTO jobs (id, store, order_id, marketplace, product_id, state, payload, quantity, "
                    "content, attempts, received, due_at, created_at, updated_at, delivered_at) "
                    "VALUES (?, 'bench', ?, 'softstore', 'bench-key', 'delivered', ?, 1, ?, 1, 1, ?, ?, ?, ?)",
                    ((i + 1, f"fill-{i:08d}", PAYLOAD, CONTENT, now, now, now, now) for i in range(low, high)),
                )
                conn.executemany(
                    "INSERT INTO attempts (job_id, at, step, outcome, state, http_status, duration_ms) "
                    "VALUES (?, ?, 'deliver', 'delivered', 'delivered', 200, 3.0)",
                    ((i + 1, now) for i in range(low, high)),
                )
        # Set-up, not measured: the fill's pages go to disk now rather than during the measured commits. With
        # them still dirty, each fsync of the measured commits also waited for the filesystem's writeback of
        # hundreds of MB (the 10^6 row then looked ~1.5x slower with FULL and within the noise with OFF).
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def _measure(url: str, synchronous: str, ops: int, tag: str) -> dict[str, float]:
    engine = create_db_engine(url, synchronous=synchronous)
    queue = JobQueue(engine, SystemClock())
    try:
        orders = [
            IncomingOrder(
                store="bench",
                marketplace="softstore",
                order_id=f"{tag}-{i}",
                product_id="bench-key",
                payload={"delivery_url": "https://x/d", "token": "t"},
            )
            for i in range(ops)
        ]
        started, cpu = time.perf_counter(), time.process_time()
        for low in range(0, ops, 32):
            await asyncio.gather(*(queue.enqueue(order) for order in orders[low : low + 32]))
        enqueue_s, enqueue_cpu = time.perf_counter() - started, time.process_time() - cpu
        claimed = 0
        started, cpu = time.perf_counter(), time.process_time()
        while claimed < ops:
            batch = await queue.claim(f"bench-{tag}", 60, 32)
            if not batch:
                break
            claimed += len(batch)
        claim_s, claim_cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        queue.close()
        engine.dispose()
    _forget(url, tag)
    return {
        "enqueue_ms": enqueue_s / ops * 1000,
        "claim_ms": claim_s / max(1, claimed) * 1000,
        "enqueue_cpu_ms": enqueue_cpu / ops * 1000,
        "claim_cpu_ms": claim_cpu / max(1, claimed) * 1000,
    }


def _forget(url: str, tag: str) -> None:
    """Delete the jobs (and attempts) one measurement added, so that each size is measured at that size."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        with conn:
            ids = "SELECT id FROM jobs WHERE store = 'bench' AND order_id LIKE ?"
            conn.execute(f"DELETE FROM attempts WHERE job_id IN ({ids})", (f"{tag}-%",))  # noqa: S608 (a constant subquery; the value is bound)
            conn.execute("DELETE FROM jobs WHERE store = 'bench' AND order_id LIKE ?", (f"{tag}-%",))
    finally:
        conn.close()


def growth(
    workdir: Path, sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000), ops: int = 3_200, repeats: int = 24
) -> dict[str, Any]:
    """Per-operation enqueue and claim cost at each database size, and the ratio to the smallest size.

    One database per size, all filled first; then every repeat measures each size in turn. Measuring one size
    after the other confounded size with time: on this shared machine a minute can be 1.5x slower than the next,
    and single runs showed 10^6 rows at 0.63x and at 1.55x of 10^3.
    """
    urls: dict[int, str] = {}
    fills: dict[int, float] = {}
    for size in sizes:
        path = workdir / f"growth-{size}.db"
        urls[size] = f"sqlite:///{path}"
        create_schema(create_db_engine(urls[size]))
        fill_started = time.perf_counter()
        fill(path, size)
        fills[size] = time.perf_counter() - fill_started
    os.sync()
    samples: dict[tuple[int, str], list[dict[str, float]]] = {
        (size, synchronous): [] for size in sizes for synchronous in ("FULL", "OFF")
    }
    cells = list(samples)
    for r in range(repeats):
        # Each repeat starts one cell later, so that no size is always measured at the same point of a repeat
        # (right after the previous scenario's processes, or after the biggest database's pages were read).
        for size, synchronous in cells[r % len(cells) :] + cells[: r % len(cells)]:
            samples[size, synchronous].append(
                asyncio.run(_measure(urls[size], synchronous, ops, f"{size}-{synchronous}-{r}"))
            )
    figures = [f"{key}_{synchronous.lower()}" for synchronous in ("FULL", "OFF") for key in ("enqueue_ms", "claim_ms")]
    rows: list[dict[str, Any]] = []
    for size in sizes:
        row: dict[str, Any] = {"rows": size, "fill_s": fills[size]}
        for synchronous in ("FULL", "OFF"):
            for key in ("enqueue_ms", "claim_ms"):
                row[f"{key}_{synchronous.lower()}"] = statistics.median(s[key] for s in samples[size, synchronous])
            row[f"samples_{synchronous.lower()}"] = samples[size, synchronous]  # each repeat's, in order
        rows.append(row)
    first = rows[0]
    for row in rows:
        for key in figures:
            row[f"{key}_ratio"] = row[key] / first[key] if first[key] else 0.0
    worst = max(row[key] for row in rows for key in row if key.endswith("_ratio"))
    return {"ops_per_measure": ops, "repeats": repeats, "rows": rows, "worst_ratio": worst}
