"""Growth: does taking an order in, and claiming it, get slower as the database fills up?

One database is filled step by step to each size (delivered jobs with one attempt each, bulk-inserted with
``executemany`` in one transaction: the shape of a daemon's history), and at each size the same work is timed
through :class:`~delivery_daemon.queue.JobQueue`: ``ops`` enqueues sent 32 at a time (so group commit applies as
in production), then claiming them all in batches of 32. It runs twice per size: with the default
``synchronous=FULL`` (what the daemon pays) and with ``synchronous=OFF`` (the SQL and index cost alone, which an
fsync of several ms would otherwise hide). Each figure is compared with the smallest size of the same run.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from delivery_daemon.clock import SystemClock
from delivery_daemon.db import create_db_engine, create_schema
from delivery_daemon.order import IncomingOrder
from delivery_daemon.queue import JobQueue

PAYLOAD = json.dumps({"delivery_url": "https://softstore.example/api/v1/orders/delivery/" + "a" * 64,
                      "token": "b" * 64})
CONTENT = json.dumps({"text": "Thank you for your order:\nABCDE-FGHIJ-KLMNO-PQRST", "keys": ["ABCDE-FGHIJ"]})


def fill(path: Path, start: int, stop: int, chunk: int = 100_000) -> None:
    """Add delivered jobs ``start..stop`` (and one attempt each) with bulk inserts, one transaction per chunk."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # filling is set-up, not measured
        now = time.time() - 86_400
        base = int(conn.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()[0])  # after measured rows
        for low in range(start, stop, chunk):
            high = min(stop, low + chunk)
            with conn:
                conn.executemany(
                    "INSERT INTO jobs (id, store, order_id, marketplace, product_id, state, payload, quantity, "
                    "content, attempts, received, due_at, created_at, updated_at, delivered_at) "
                    "VALUES (?, 'bench', ?, 'softstore', 'bench-key', 'delivered', ?, 1, ?, 1, 1, ?, ?, ?, ?)",
                    ((base + i + 1, f"fill-{i:08d}", PAYLOAD, CONTENT, now, now, now, now) for i in range(low, high)),
                )
                conn.executemany(
                    "INSERT INTO attempts (job_id, at, step, outcome, state, http_status, duration_ms) "
                    "VALUES (?, ?, 'deliver', 'delivered', 'delivered', 200, 3.0)",
                    ((base + i + 1, now) for i in range(low, high)),
                )
    finally:
        conn.close()


async def _measure(url: str, synchronous: str, ops: int, tag: str) -> dict[str, float]:
    engine = create_db_engine(url, synchronous=synchronous)
    queue = JobQueue(engine, SystemClock())
    try:
        orders = [IncomingOrder(store="bench", marketplace="softstore", order_id=f"{tag}-{i}",
                                product_id="bench-key", payload={"delivery_url": "https://x/d", "token": "t"})
                  for i in range(ops)]
        started = time.perf_counter()
        for low in range(0, ops, 32):
            await asyncio.gather(*(queue.enqueue(order) for order in orders[low:low + 32]))
        enqueue_s = time.perf_counter() - started
        claimed = 0
        started = time.perf_counter()
        while claimed < ops:
            batch = await queue.claim(f"bench-{tag}", 60, 32)
            if not batch:
                break
            claimed += len(batch)
        claim_s = time.perf_counter() - started
    finally:
        queue.close()
        engine.dispose()
    return {"enqueue_ms": enqueue_s / ops * 1000, "claim_ms": claim_s / max(1, claimed) * 1000}


def growth(workdir: Path, sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000), ops: int = 320,
           repeats: int = 3) -> dict[str, Any]:
    """Per-operation enqueue and claim cost at each database size, and the ratio to the smallest size."""
    path = workdir / "growth.db"
    url = f"sqlite:///{path}"
    create_schema(create_db_engine(url))
    rows: list[dict[str, Any]] = []
    filled = 0
    for size in sizes:
        fill_started = time.perf_counter()
        fill(path, filled, size)
        filled = size
        row: dict[str, Any] = {"rows": size, "fill_s": time.perf_counter() - fill_started}
        for synchronous in ("FULL", "OFF"):
            samples = [asyncio.run(_measure(url, synchronous, ops, f"{size}-{synchronous}-{r}"))
                       for r in range(repeats)]
            for key in ("enqueue_ms", "claim_ms"):
                row[f"{key}_{synchronous.lower()}"] = statistics.median(s[key] for s in samples)
        rows.append(row)
    first = rows[0]
    for row in rows:
        for key in [k for k in row if k.endswith(("_full", "_off"))]:
            row[f"{key}_ratio"] = row[key] / first[key] if first[key] else 0.0
    worst = max(row[key] for row in rows for key in row if key.endswith("_ratio"))
    return {"ops_per_measure": ops, "repeats": repeats, "rows": rows, "worst_ratio": worst}
