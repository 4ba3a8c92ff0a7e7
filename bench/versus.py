"""The daemon side by side with what a seller would run instead (issue #26), in one run on one machine.

The peers: the SoftStore seed's own Express handler completed as its Recommended Flow says
(``bench/peers/express/server.js``) and the same flow as a hand-written Starlette + httpx handler (:mod:`bench.inline`).
Both verify the order with ``GET /orders/info/{id}`` like the daemon, generate a key and post it to the delivery URL
inline, storing nothing; the daemon commits every webhook (``synchronous=FULL``) before answering.

Each system runs alone on one core (``taskset -c 0``, all its threads); the reference marketplace and this process
(the load) share the other core. Per system: idle RSS 1 s after start; a closed loop of ``orders`` signed webhooks
over 32 connections (delivered orders/s, CPU per delivered order from ``/proc``); then open loops at 50/s and 10/s
(webhook sent → delivery accepted by the marketplace). For the daemon, the 50/s latency is split into its parts from
its own log lines (:data:`PARTS`).

The Express peer needs ``node`` and ``npm`` (its packages are installed with ``npm ci`` into the work directory);
without them, or on a machine with one core (no pinning possible), the result says why it is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from . import profile as sampling
from .loadgen import run_mode, steady_sent
from .processes import ROOT, ServerProcess, start_process, start_server
from .scenarios import STORE, Bench, _wait_delivered, percentiles

SYSTEMS = ("daemon", "express", "inline")
EXPRESS = ROOT / "bench" / "peers" / "express"
PARTS = ("receive_commit", "commit_to_verified", "generate", "store", "deliver", "verify_round_trip")
"""The daemon's path in consecutive parts (the first five add up to about the whole), and the verification's own
round trip, which overlaps ``receive_commit`` when the job is handed to the worker as it commits."""
PROFILE_SECONDS = 5.0
"""How long ``--versus-profile`` samples the daemon's closed loop (it lasts ~10 s at 2,000 orders on this machine)."""


def _cores() -> tuple[str, set[int]] | None:
    """(the measured system's core for taskset, the cores left for the marketplace and the load), or None."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or shutil.which("taskset") is None:
        return None
    return str(cores[0]), set(cores[1:])


def _pin_all_threads(pid: int, cores: set[int]) -> None:
    """Every thread of ``pid`` onto ``cores`` (sched_setaffinity on a pid moves only its main thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cores)


def _express_dir(workdir: Path) -> Path | str:
    """The Express peer installed in ``workdir`` (``npm ci`` from the committed lock file), or why it cannot be."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed"
    target = workdir / "express"
    if not (target / "node_modules").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json", "server.js"):
            shutil.copy(EXPRESS / name, target / name)
        done = subprocess.run(
            ["npm", "ci", "--silent", "--no-audit", "--no-fund"],  # noqa: S607  (npm from PATH, as the docs say)
            cwd=target,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            return f"npm ci failed: {done.stderr.strip()[-300:]}"
    return target


@contextlib.contextmanager
def _system(
    bench: Bench, name: str, pin: str | None, tag: str, base: Path | None
) -> Iterator[tuple[ServerProcess, str]]:
    """The system running (on core ``pin`` when given) and the URL its webhooks go to; ``base`` is the daemon of
    the checkout ``base`` (``--versus-base``), on a database of its own like the daemon's."""
    prefix = ["taskset", "-c", pin] if pin is not None else []
    log_file = str(bench.workdir / f"versus-{name}-{tag}.log")
    if name in ("daemon", "base"):
        spec = bench.daemon_spec(f"versus-{name}-{tag}")
        spec["log_file"] = log_file
        root = base if name == "base" and base is not None else ROOT
        with start_server("daemon", spec, bench.workdir, prefix=prefix, root=root) as daemon:
            yield daemon, f"{daemon.url}/webhooks/{STORE}"
    elif name == "inline":
        spec = {"api_key": bench.api_key, "api_base": bench.api_base, "log_file": log_file}
        with start_server("inline", spec, bench.workdir, prefix=prefix) as inline:
            yield inline, f"{inline.url}/webhook"
    else:
        where = _express_dir(bench.workdir)
        assert isinstance(where, Path), where
        env = {"PATH": os.environ["PATH"], "API_KEY": bench.api_key, "API_BASE": bench.api_base, "PORT": "0"}
        with start_process("express", [*prefix, "node", "server.js"], {**env, "LOG_FILE": log_file}, where) as node:
            yield node, f"{node.url}/webhook"


def _closed_loop(
    bench: Bench, process: ServerProcess, url: str, orders: int, profile: Path | None = None
) -> dict[str, Any]:
    """``orders`` webhooks over 32 connections, as fast as the system takes them: delivered orders/s, CPU per
    delivered order, and how busy the other core was (the marketplace and the load: near 1.0, they bound the run).
    With ``profile`` (a file for py-spy's samples), the first :data:`PROFILE_SECONDS` are sampled and the result's
    ``profile`` is :func:`bench.profile.split` of them (the loop's other figures are then the profiled process's)."""
    payloads = bench.place_orders(orders)
    before = bench.delivered_count()
    cpu_before, market_before = process.process_cpu(), bench.market.process_cpu()
    threads_before = process.thread_cpu()
    spy = sampling.start(process.pid, PROFILE_SECONDS, profile) if profile is not None else None
    sent = run_mode("once", url, payloads, 32, bench.workdir)
    _wait_delivered(bench, before + orders, 600)
    cpu_after, market_after = process.process_cpu(), bench.market.process_cpu()
    threads = {name: (cpu - threads_before[name]) / len(payloads) * 1e3 for name, cpu in process.thread_cpu().items()}
    accepted = bench.accepted([p["id_order"] for p in payloads])
    seconds = max(accepted.values()) - sent["started"]
    return {
        "orders": orders,
        "delivered": len(accepted),
        "delivered_per_s": len(accepted) / seconds,
        "cpu_ms_per_order": (cpu_after - cpu_before) / len(accepted) * 1e3,
        "cpu_ms_per_order_by_thread": threads,
        "other_core_busy": (market_after - market_before + sent["cpu_s"]) / seconds,
        "market_cpu_ms_per_order": (market_after - market_before) / len(accepted) * 1e3,
        "load_cpu_ms_per_order": sent["cpu_s"] / len(accepted) * 1e3,
        **({"profile": spy.finish()} if spy is not None else {}),
    }


def _open_loop(bench: Bench, url: str, rate: float, seconds: float) -> tuple[dict[str, Any], dict[str, float]]:
    """A steady ``rate`` for ``seconds``; latency figures, and when each order's webhook was sent."""
    payloads = bench.place_orders(int(rate * seconds))
    before = bench.delivered_count()
    sent = steady_sent(url, payloads, rate, bench.workdir)
    _wait_delivered(bench, before + len(payloads), 120)
    accepted = bench.accepted(list(sent))
    latencies = [(accepted[i] - t) * 1000 for i, t in sent.items() if i in accepted]
    return {"rate": rate, "orders": len(payloads), **percentiles(latencies)}, sent


def latency_split(log_file: Path, sent: dict[str, float]) -> dict[str, float]:
    """Median milliseconds of each part of the daemon's path for the orders in ``sent`` (from its JSON log lines:
    ``webhook.accepted``, ``order.verified``, ``content.generated``, ``delivery.attempt``, ``delivery.succeeded``)."""
    seen: dict[str, dict[str, tuple[float, float]]] = {}
    wanted = {"webhook.accepted", "order.verified", "content.generated", "delivery.attempt", "delivery.succeeded"}
    with log_file.open() as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("event") in wanted and record.get("order_id") in sent:
                at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
                seen.setdefault(record["order_id"], {})[record["event"]] = (at, float(record.get("duration_ms", 0.0)))
    parts: dict[str, list[float]] = {part: [] for part in PARTS}
    for order_id, events in seen.items():
        if not wanted <= events.keys():
            continue
        accepted, (verified, verify_ms) = events["webhook.accepted"][0], events["order.verified"]
        generated, generate_ms = events["content.generated"]
        parts["receive_commit"].append((accepted - sent[order_id]) * 1000)
        parts["commit_to_verified"].append((verified - accepted) * 1000)  # pick-up and what the commit did not hide
        parts["generate"].append(generate_ms)
        # content.generated is logged once the content is committed: the store is what its generator did not take
        parts["store"].append((generated - verified) * 1000 - generate_ms)
        parts["deliver"].append((events["delivery.attempt"][0] - generated) * 1000 + events["delivery.succeeded"][1])
        parts["verify_round_trip"].append(verify_ms)
    return {part: statistics.median(values) for part, values in parts.items() if values}


def _measure(
    bench: Bench,
    name: str,
    pin: str | None,
    orders: int,
    seconds: float,
    tag: str,
    base: Path | None,
    profile: Path | None = None,
) -> dict[str, Any]:
    with _system(bench, name, pin, tag, base) as (process, url):
        if pin is not None:
            _pin_all_threads(process.pid, {int(pin)})
        time.sleep(1.0)  # start-up garbage settles before the idle figure
        result: dict[str, Any] = {"rss_idle_kb": process.status()["VmRSS"]}
        _open_loop(bench, url, 50.0, 0.2)  # warm-up: the first order fetches the JWT and opens connections
        result["closed_loop"] = _closed_loop(bench, process, url, orders)
        if profile is not None:  # a loop of its own: py-spy pauses the process for each sample
            result["profiled"] = _closed_loop(bench, process, url, orders, profile)
        for rate in (50.0, 10.0):
            figures, sent = _open_loop(bench, url, rate, seconds)
            if name in ("daemon", "base") and rate == 50.0:
                figures["split_p50_ms"] = latency_split(bench.workdir / f"versus-{name}-{tag}.log", sent)
            result[f"open_{rate:g}"] = figures
    return result


def versus(
    bench: Bench,
    *,
    orders: int = 2000,
    seconds: float = 20.0,
    systems: tuple[str, ...] = SYSTEMS,
    rounds: int = 1,
    base: Path | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """Every system in turn under the same load, ``rounds`` times (every other round in reverse order, so that no
    system always runs first); each figure is the median of the rounds (each round's own in ``rounds``), with the
    daemon's ratios to the peers. With ``base`` (a checkout), that checkout's daemon runs as the system ``base``
    in every round too: a change measured against the code before it and the peers, in one run. With ``profile``,
    the daemon runs a second closed loop in the first round, sampled with py-spy (``profiled``, see
    :mod:`bench.profile`; skipped, and said so in ``skipped``, when py-spy is not installed)."""
    cores = _cores()
    results: dict[str, Any] = {
        "orders": orders,
        "open_loop_s": seconds,
        "pinned": cores is not None,
        "skipped": {},
        "rounds": [],
        "base_checkout": str(base) if base is not None else None,
    }
    names = [*systems, *(["base"] if base is not None else [])]
    express = _express_dir(bench.workdir)
    if "express" in names and not isinstance(express, Path):
        results["skipped"]["express"] = express
        names.remove("express")
    if profile and not sampling.available():
        results["skipped"]["profile"] = "py-spy is not installed next to this Python (pip install py-spy)"
        profile = False
    own = os.sched_getaffinity(0)
    if cores is not None:
        _pin_all_threads(bench.market.pid, cores[1])
        os.sched_setaffinity(0, cores[1])
    try:
        for round_ in range(rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            pin = cores[0] if cores else None
            samples = bench.workdir / "versus-daemon.pyspy.txt" if profile and round_ == 0 else None
            results["rounds"].append(
                {
                    name: _measure(
                        bench, name, pin, orders, seconds, str(round_), base, samples if name == "daemon" else None
                    )
                    for name in order
                }
            )
    finally:
        os.sched_setaffinity(0, own)
        _pin_all_threads(bench.market.pid, own)
    for name in names:
        results[name] = _median([each[name] for each in results["rounds"]])
    results["ratios"] = _ratios(results)
    return results


def _median(figures: list[Any]) -> Any:
    """The median of each number over ``figures`` (dicts of the same shape, nested; a key only some have, like the
    first round's ``profile``, is the median of those)."""
    first = figures[0]
    if isinstance(first, dict):
        return {key: _median([each[key] for each in figures if key in each]) for key in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(figures)
    return first


def _ratios(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The daemon's figures over each peer's (the issue's targets are written against these), and over the base
    checkout's daemon's when there is one."""
    ratios: dict[str, dict[str, float]] = {}
    daemon = results.get("daemon")
    for peer in ("express", "inline", "base"):
        other = results.get(peer)
        if daemon is None or other is None:
            continue
        ratios[peer] = {
            "delivered_per_s": daemon["closed_loop"]["delivered_per_s"] / other["closed_loop"]["delivered_per_s"],
            "cpu_ms_per_order": daemon["closed_loop"]["cpu_ms_per_order"] / other["closed_loop"]["cpu_ms_per_order"],
            "p50_at_50": daemon["open_50"]["p50_ms"] / other["open_50"]["p50_ms"],
            "p99_at_50": daemon["open_50"]["p99_ms"] / other["open_50"]["p99_ms"],
            "rss_idle": daemon["rss_idle_kb"] / other["rss_idle_kb"],
        }
    return ratios
