"""Load from a separate process: ``wrk`` with a Lua script when installed, else this module's own generator.

Both are closed-loop: ``connections`` keep-alive connections, each sending the next body as soon as the previous
answer arrived, for ``duration`` seconds. Bodies come one per line from a file (each a distinct signed webhook, so
the daemon creates a job per request rather than answering duplicates). The result is the same dict either way:
``requests, seconds, rps, p50_ms, p99_ms, errors, non2xx, tool``.

``python -m bench.loadgen URL BODIES CONNECTIONS DURATION`` is the fallback generator: asyncio (uvloop when
installed) over raw sockets, HTTP/1.1 keep-alive, so that the generator costs far less CPU than the server it loads.
``python -m bench.loadgen once URL BODIES CONNECTIONS`` sends every body exactly once (a closed loop) and
``python -m bench.loadgen steady URL BODIES RATE`` sends them at a steady rate (an open loop); both are
``bench/versus.py``'s load, where a repeated body would be delivered twice by a peer that stores nothing.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LUA = r"""
local nthreads = 0
function setup(thread)
  thread:set("id", nthreads)
  nthreads = nthreads + 1
end
function init(args)
  bodies = {}
  local i, n = 0, tonumber(args[2])
  for line in io.lines(args[1]) do
    if i % n == id then bodies[#bodies + 1] = line end
    i = i + 1
  end
  idx = 0
  hdrs = {["Content-Type"] = "application/json"}
end
function request()
  idx = idx + 1
  if idx > #bodies then idx = 1 end
  return wrk.format("POST", nil, hdrs, bodies[idx])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d, "non2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_load(url: str, bodies: Path, *, connections: int, duration: float, use_wrk: bool) -> dict[str, Any]:
    """Load ``url`` from another process; returns the figures (see the module docstring)."""
    if use_wrk:
        script = bodies.with_suffix(".lua")
        script.write_text(LUA)
        threads = 1  # one wrk thread keeps up with a Python server and leaves the other core to it
        command = [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(duration))}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            str(bodies),
            str(threads),
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
        line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
        data = json.loads(line.removeprefix("WRKJSON "))
        seconds = data["duration_us"] / 1e6
        return {
            "requests": data["requests"],
            "seconds": seconds,
            "rps": data["requests"] / seconds,
            "p50_ms": data["p50_us"] / 1000,
            "p99_ms": data["p99_us"] / 1000,
            "errors": data["errors"],
            "non2xx": data["non2xx"],
            "tool": "wrk",
        }
    command = [sys.executable, "-m", "bench.loadgen", url, str(bodies), str(connections), str(duration)]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def run_mode(mode: str, url: str, payloads: list[dict[str, Any]], arg: float, workdir: Path) -> dict[str, Any]:
    """``python -m bench.loadgen MODE`` (``once`` with ``arg`` connections, ``steady`` at ``arg`` per second) over
    ``payloads`` from its own process, on this process's cores; its result, and the CPU seconds it used
    (``cpu_s``)."""
    bodies = workdir / f"load-{mode}.jsonl"
    bodies.write_text("".join(json.dumps(payload) + "\n" for payload in payloads))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", mode, url, str(bodies), f"{arg:g}"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr.strip()[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def steady_sent(url: str, payloads: list[dict[str, Any]], rate: float, workdir: Path) -> dict[str, float]:
    """The webhooks ``payloads`` sent at a steady ``rate`` (``steady`` mode): when each order's request was written
    (epoch seconds, by ``id_order``)."""
    written = run_mode("steady", url, payloads, rate, workdir)["sent"]
    return {payloads[int(index)]["id_order"]: at for index, at in written.items()}


# -- the fallback generator (runs in its own process) -----------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


IDLE_EXPIRY = 4.0
"""Seconds a connection of :func:`steady` is reused after its last answer: servers close idle ones after 5 s
(uvicorn's and Node.js's default), and a request written as they close would be lost."""


def _request(host: str, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> int:
    """The status of the next response on ``reader`` (its body read and dropped)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def _connection(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    start: int,
    step: int,
    deadline: float,
    latencies: list[float],
    counts: dict[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    index = start
    try:
        while time.perf_counter() < deadline:
            request = _request(host, path, bodies[index % len(bodies)])
            index += step
            t0 = time.perf_counter()
            writer.write(request)
            status = await _answer(reader)
            latencies.append(time.perf_counter() - t0)
            counts["non2xx" if not 200 <= status < 300 else "ok"] += 1
    except (OSError, asyncio.IncompleteReadError):
        counts["errors"] += 1
    finally:
        writer.close()


async def generate(url: str, bodies: list[bytes], connections: int, duration: float) -> dict[str, Any]:
    parts = urlsplit(url)
    latencies: list[float] = []
    counts = {"ok": 0, "non2xx": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(
            _connection(
                parts.hostname or "127.0.0.1",
                parts.port or 80,
                parts.path,
                bodies,
                i,
                connections,
                deadline,
                latencies,
                counts,
            )
            for i in range(connections)
        )
    )
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds,
        "p50_ms": _percentile(latencies, 0.5) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "errors": counts["errors"],
        "non2xx": counts["non2xx"],
        "tool": "python",
    }


def _all_accepted(statuses: list[int]) -> None:
    refused = [status for status in statuses if not 200 <= status < 300]
    if refused:
        raise RuntimeError(f"{len(refused)} webhooks were refused: {sorted(set(refused))}")


async def once(url: str, bodies: list[bytes], connections: int) -> dict[str, Any]:
    """Every body exactly once over ``connections`` keep-alive connections, each sending its next body when the
    previous answer arrived (the closed loop of ``bench/versus.py``: a peer that stores nothing would deliver a
    repeated body twice). Raises when any answer is not 2xx."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    pending = iter(bodies)
    statuses: list[int] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for body in pending:
                writer.write(_request(host, parts.path, body))
                statuses.append(await _answer(reader))
        finally:
            writer.close()

    started = time.time()
    await asyncio.gather(*(connection() for _ in range(connections)))
    _all_accepted(statuses)
    return {"requests": len(statuses), "started": started, "seconds": time.time() - started}


async def steady(url: str, bodies: list[bytes], rate: float) -> dict[str, Any]:
    """Each body at its slot of a steady ``rate`` per second (an open loop): sent on an idle keep-alive connection,
    a new one only when all are busy. Returns when each body's request was written (epoch seconds, by index): the
    write is the last thing before the wire, so the latency measured from it carries no client overhead."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []  # most recently used last
    sent: dict[int, float] = {}
    statuses: list[int] = []

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while idle:
            reader, writer, used = idle.pop()
            if time.monotonic() - used < IDLE_EXPIRY:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(host, port)

    async def send(index: int, body: bytes) -> None:
        reader, writer = await connection()
        sent[index] = time.time()
        writer.write(_request(host, parts.path, body))
        statuses.append(await _answer(reader))
        idle.append((reader, writer, time.monotonic()))

    for _ in range(8):  # connections opened before the clock starts, as a marketplace's are kept alive
        idle.append((*await asyncio.open_connection(host, port), time.monotonic()))
    tasks = []
    start = time.perf_counter()
    for index, body in enumerate(bodies):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(index, body)))
    await asyncio.gather(*tasks)
    for _, writer, _ in idle:
        writer.close()
    _all_accepted(statuses)
    return {"sent": sent}


if __name__ == "__main__":
    args = sys.argv[1:]
    mode = args.pop(0) if args[0] in ("once", "steady") else "duration"
    lines = [line.encode() for line in Path(args[1]).read_text().splitlines() if line]
    if mode == "once":
        coroutine: Any = once(args[0], lines, int(args[2]))
    elif mode == "steady":
        coroutine = steady(args[0], lines, float(args[2]))
    else:
        coroutine = generate(args[0], lines, int(args[2]), float(args[3]))
    try:
        import uvloop

        result = uvloop.run(coroutine)
    except ImportError:
        result = asyncio.run(coroutine)
    print(json.dumps(result))
