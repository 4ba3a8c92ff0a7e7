"""The measured scenarios: ingest vs the bare baseline, end-to-end latency, backlog drain with memory.

Every scenario starts its own processes (the reference marketplace, the daemon, the baseline) on loopback from
:mod:`bench.processes`; the orchestrator (this process) only sends load and reads results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from delivery_daemon.reference.softstore import documented_signature

from .loadgen import run_load, steady_sent
from .processes import ServerProcess, start_server

STORE = "bench"
PRODUCT = "bench-key"


def daemon_spec(
    workdir: Path, name: str, api_base: str, api_key: str, *, start_worker: bool = True, **sections: Any
) -> dict[str, Any]:
    """The spec ``bench.serve daemon`` runs: default (durable) settings, a SQLite database ``<name>.db`` in
    ``workdir`` (encrypted at rest with the generated ``<name>.db.key``), one SoftStore store at ``api_base``, the
    shipped ``pattern`` generator, JSON logs to ``<name>.log``; ``sections`` merged over the settings' sections."""
    settings: dict[str, Any] = {
        "database": {"url": f"sqlite:///{workdir / (name + '.db')}"},
        "stores": [
            {
                "name": STORE,
                "marketplace": "softstore",
                "api_url": api_base,
                "api_key": api_key,
                "products": {
                    PRODUCT: {
                        "generator": "pattern",
                        "options": {"pattern": "XXXXX-XXXXX-XXXXX-XXXXX"},
                        "template": "Thank you for order {order_id}:\n{keys_lines}",
                    }
                },
            }
        ],
    }
    for key, value in sections.items():
        settings[key] = {**settings.get(key, {}), **value}
    return {"settings": settings, "start_worker": start_worker, "log_file": str(workdir / f"{name}.log")}


@dataclass
class Bench:
    """What every scenario shares: a work directory, the smoke flag, the load tool, the marketplace."""

    workdir: Path
    smoke: bool
    use_wrk: bool
    api_key: str
    market: ServerProcess

    @property
    def api_base(self) -> str:
        return f"{self.market.url}/api/v1"

    def daemon_spec(self, name: str, *, start_worker: bool = True, **sections: Any) -> dict[str, Any]:
        """Default (durable) settings, one SoftStore store, the shipped ``pattern`` generator."""
        return daemon_spec(self.workdir, name, self.api_base, self.api_key, start_worker=start_worker, **sections)

    def place_orders(self, count: int) -> list[dict[str, Any]]:
        """Orders the marketplace knows (no webhook sent yet); their signed webhook bodies."""
        with httpx.Client(timeout=300) as client:
            response = client.post(f"{self.market.url}/_bench/orders", json={"count": count})
            response.raise_for_status()
            orders: list[dict[str, Any]] = response.json()
            return orders

    def accepted(self, ids: list[str]) -> dict[str, float]:
        with httpx.Client(timeout=120) as client:
            found: dict[str, float] = client.post(f"{self.market.url}/_bench/accepted", json={"ids": ids}).json()
            return found

    def delivered_count(self, client: httpx.Client | None = None) -> int:
        """Deliveries the marketplace accepted so far in this run (cumulative over scenarios)."""
        if client is None:
            with httpx.Client(timeout=30) as own:
                return self.delivered_count(own)
        return int(client.get(f"{self.market.url}/_bench/delivered").json()["accepted"])


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    return {"n": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": ordered[-1]}


# -- ingest -----------------------------------------------------------------------------------------------------


def _signed_bodies(bench: Bench, count: int, path: Path) -> Path:
    """``count`` distinct signed webhooks (orders the daemon will queue; the ingest daemon runs no worker)."""
    lines = []
    for _ in range(count):
        order_id = secrets.token_hex(12)
        lines.append(
            json.dumps(
                {
                    "id_order": order_id,
                    "id_product": PRODUCT,
                    "payment_status": "paid",
                    "signature": documented_signature(bench.api_key, order_id),
                    "delivery_url": f"{bench.api_base}/orders/delivery/{secrets.token_hex(16)}",
                    "token": "t",
                },
                separators=(",", ":"),
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


INGEST_SERVERS = ("baseline", "daemon", "unstored")
"""Measured in turn each round: the bare endpoint, the daemon, and the daemon that stores nothing (bench/serve.py)."""


def ingest(bench: Bench, *, connections: int = 32, duration: float = 10.0, rounds: int = 2) -> dict[str, Any]:
    """Signed webhooks against the daemon vs the bare JSON endpoint, alternating, same load, same server settings.

    The daemon runs its receiver only (``start_worker=False``): this measures taking orders in, durably
    (``synchronous=FULL``, each answer after its commit); delivering them is measured by the other scenarios.
    ``unstored`` is the same receiver with nothing stored: the ratio it reaches is what the rest of taking a
    webhook (checks, logging, the HTTP stack) leaves for the database. Each run also records the server's CPU per
    request on its event loop and on its other threads (the daemon's database thread).
    """
    per_run = int(duration * 6000) + 1000  # more distinct bodies than the fastest run can send: no duplicates
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in INGEST_SERVERS}
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                start_server(
                    name,
                    {} if name == "baseline" else bench.daemon_spec(f"ingest-{name}", start_worker=False),
                    bench.workdir,
                )
            )
            for name in INGEST_SERVERS
        }
        urls = {name: f"{server.url}/webhooks/{STORE}" for name, server in servers.items()}
        warm = _signed_bodies(bench, 2000, bench.workdir / "warm.jsonl")
        for url in urls.values():
            run_load(url, warm, connections=connections, duration=1.0, use_wrk=bench.use_wrk)
        for round_ in range(rounds):
            for name, url in urls.items():
                bodies = _signed_bodies(bench, per_run, bench.workdir / f"ingest-{name}-{round_}.jsonl")
                before = servers[name].thread_cpu()
                run = run_load(url, bodies, connections=connections, duration=duration, use_wrk=bench.use_wrk)
                after = servers[name].thread_cpu()
                for thread, seconds in after.items():
                    run[f"{thread}_us_per_request"] = (seconds - before[thread]) / max(1, run["requests"]) * 1e6
                results[name].append(run)
    summary: dict[str, Any] = {
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "tool": results["daemon"][0]["tool"],
    }
    for name, runs in results.items():
        summary[name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "event_loop_us_per_request": statistics.median(r["event_loop_us_per_request"] for r in runs),
            "other_threads_us_per_request": statistics.median(r["other_threads_us_per_request"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "errors": sum(r["errors"] + r["non2xx"] for r in runs),
            "runs": runs,
        }
    summary["ratio"] = summary["daemon"]["rps"] / summary["baseline"]["rps"]
    summary["unstored_ratio"] = summary["unstored"]["rps"] / summary["baseline"]["rps"]
    return summary


# -- end-to-end latency ---------------------------------------------------------------------------------------


def _wait_delivered(bench: Bench, expected: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            if bench.delivered_count(client) >= expected:
                return time.time()
            time.sleep(0.05)
    raise RuntimeError(f"not every order was delivered within {timeout:g} s")


def end_to_end(bench: Bench, *, rate: float = 50.0, seconds: float = 20.0, warmup: int = 10) -> dict[str, Any]:
    """Webhook sent → delivery accepted by the reference marketplace, at a steady ``rate``; plus idle memory."""
    count = int(rate * seconds)
    payloads = bench.place_orders(count + warmup)
    before = bench.delivered_count()
    with start_server("daemon", bench.daemon_spec("e2e"), bench.workdir) as daemon:
        time.sleep(1.0)  # let start-up garbage settle before reading the idle figure
        idle = daemon.status()
        url = f"{daemon.url}/webhooks/{STORE}"
        # Warm-up: the first order also fetches the JWT and opens the keep-alive connections.
        steady_sent(url, payloads[:warmup], rate, bench.workdir)
        _wait_delivered(bench, before + warmup, 60)
        sent = steady_sent(url, payloads[warmup:], rate, bench.workdir)
        _wait_delivered(bench, before + warmup + count, 120)
        after = daemon.status()
    accepted = bench.accepted(list(sent))
    latencies = [(accepted[i] - t) * 1000 for i, t in sent.items() if i in accepted]
    return {
        "rate": rate,
        "orders": count,
        "warmup_orders": warmup,
        **percentiles(latencies),
        "rss_idle_kb": idle["VmRSS"],
        "rss_after_kb": after["VmRSS"],
    }


# -- backlog drain ------------------------------------------------------------------------------------------------


async def _post_all(url: str, payloads: list[dict[str, Any]], concurrency: int = 32) -> None:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            response = await client.post(url, json=queue.get_nowait())
            if response.status_code != 200:
                raise RuntimeError(f"webhook refused: {response.status_code}")

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(sender(client) for _ in range(concurrency)))


def drain(bench: Bench, *, jobs: int = 10_000) -> dict[str, Any]:
    """``jobs`` orders queued while nothing could deliver them, then a daemon with its worker drains the backlog.

    The backlog is taken in by a receiver-only daemon (as if the marketplace were down, but without putting the
    jobs into retry back-off, which would measure the retry schedule instead of throughput); a daemon with its
    worker is then started on the same database. Rate = jobs / (last delivery accepted - daemon ready). The
    daemon's CPU per order (its event loop, its other threads) is recorded too: the rate moves with the machine's
    minute, and the CPU shows whether the daemon's work per order did.
    """
    payloads = bench.place_orders(jobs)
    with start_server("daemon", bench.daemon_spec("drain", start_worker=False), bench.workdir) as receiver:
        started = time.perf_counter()
        asyncio.run(_post_all(f"{receiver.url}/webhooks/{STORE}", payloads))
        queued_s = time.perf_counter() - started
    before = bench.delivered_count()
    with start_server("daemon", bench.daemon_spec("drain"), bench.workdir) as daemon:
        ready = time.time()
        cpu_before = daemon.thread_cpu()
        done = _wait_delivered(bench, before + jobs, 600)
        cpu_after = daemon.thread_cpu()
        memory = daemon.status()
    accepted = bench.accepted([p["id_order"] for p in payloads])
    if len(accepted) != jobs:
        raise RuntimeError(f"{jobs - len(accepted)} backlog orders were not delivered")
    last = max(accepted.values())
    return {
        "jobs": jobs,
        "queue_fill_s": queued_s,
        "drain_s": last - ready,
        "deliveries_per_s": jobs / (last - ready),
        "observed_done_s": done - ready,
        "rss_end_kb": memory["VmRSS"],
        "rss_peak_kb": memory["VmHWM"],
        **{f"{thread}_ms_per_order": (cpu_after[thread] - cpu_before[thread]) / jobs * 1e3 for thread in cpu_after},
    }
