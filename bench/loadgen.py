"""Load from a separate process: ``wrk`` with a Lua script when installed, else this module's own generator.

Both are closed-loop: ``connections`` keep-alive connections, each sending the next body as soon as the previous
answer arrived, for ``duration`` seconds. Bodies come one per line from a file (each a distinct signed webhook, so
the daemon creates a job per request rather than answering duplicates). The result is the same dict either way:
``requests, seconds, rps, p50_ms, p99_ms, errors, non2xx, tool``.

``python -m bench.loadgen URL BODIES CONNECTIONS DURATION`` is the fallback generator: asyncio (uvloop when
installed) over raw sockets, HTTP/1.1 keep-alive, so that the generator costs far less CPU than the server it loads.
"""

from __future__ import annotations

import asyncio
import json
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


# -- the fallback generator (runs in its own process) -----------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


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
            body = bodies[index % len(bodies)]
            index += step
            request = (
                f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            status = int(head.split(b" ", 2)[1])
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


if __name__ == "__main__":
    args = sys.argv[1:]
    lines = [line.encode() for line in Path(args[1]).read_text().splitlines() if line]
    coroutine = generate(args[0], lines, int(args[2]), float(args[3]))
    try:
        import uvloop

        result = uvloop.run(coroutine)
    except ImportError:
        result = asyncio.run(coroutine)
    print(json.dumps(result))
