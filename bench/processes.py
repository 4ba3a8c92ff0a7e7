"""Starting and watching the measured server processes (daemon, baseline) from the orchestrator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServerProcess:
    """A running ``bench.serve`` process on loopback."""

    process: subprocess.Popen[str]
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, int]:
        """Memory figures from ``/proc/<pid>/status`` in KiB (VmRSS now, VmHWM the peak)."""
        figures: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    figures[key] = int(value.split()[0])
        return figures

    def process_cpu(self) -> float:
        """CPU seconds (user + system) of the whole process so far, threads that have ended included (from
        ``/proc/<pid>/stat``; summing ``task/*/stat`` would miss them)."""
        return _cpu_seconds(f"/proc/{self.pid}/stat")

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) so far: ``event_loop`` (the main thread, where uvicorn's loop runs) and
        ``other_threads`` (the database thread and any other), from ``/proc/<pid>/task/*/stat``."""
        cpu = {"event_loop": 0.0, "other_threads": 0.0}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                seconds = _cpu_seconds(f"/proc/{self.pid}/task/{tid}/stat")
            except FileNotFoundError:  # the thread ended between the listing and the read
                continue
            cpu["event_loop" if int(tid) == self.pid else "other_threads"] += seconds
        return cpu


def _cpu_seconds(stat: str) -> float:
    """utime + stime of a ``/proc/.../stat`` file (fields 14 and 15 of stat(5)), in seconds."""
    with open(stat) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile_command(pid: int, seconds: float, out: Path, *, native: bool = False) -> list[str]:
    """A py-spy command that samples ``pid`` for ``seconds`` and writes ``out`` (``.txt``: raw stacks). ``native``:
    every thread apart, with C frames; py-spy then pauses the process for each sample (it cannot read the native
    stacks of a running one), so such a run's own figures are not the unprofiled ones."""
    return [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "250",
        *(["--threads", "--native"] if native else ["--nonblocking"]),
        "-f",
        "raw" if out.suffix == ".txt" else "flamegraph",
        "-o",
        str(out),
    ]


@contextlib.contextmanager
def start_server(
    kind: str,
    spec: dict[str, Any],
    workdir: Path,
    *,
    timeout: float = 60.0,
    root: Path = ROOT,
    prefix: list[str] | None = None,
) -> Iterator[ServerProcess]:
    """Run ``python -m bench.serve KIND`` with ``spec``; stopped (SIGTERM, then SIGKILL) when the block ends.

    ``root``: the checkout whose code runs (``bench.compare`` runs another one's daemon next to this one's).
    ``prefix``: a command that runs it (``taskset -c 0``: bench/versus.py pins each system to one core).
    """
    path = workdir / f"{kind}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    command = [*(prefix or []), sys.executable, "-m", "bench.serve", kind, str(path)]
    with start_process(kind, command, {**os.environ, "PYTHONPATH": str(root)}, root, timeout=timeout) as server:
        yield server


@contextlib.contextmanager
def start_process(
    name: str, command: list[str], env: dict[str, str], cwd: Path, *, timeout: float = 60.0
) -> Iterator[ServerProcess]:
    """Run ``command``, which prints ``READY <port>`` on stdout once it accepts connections on loopback; stopped
    (SIGTERM, then SIGKILL) when the block ends."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=cwd, env=env)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("READY") or not line:
                break
        if not line.startswith("READY"):
            raise RuntimeError(f"{name} server did not start (exit {process.poll()})")
        server = ServerProcess(process, int(line.split()[1]))
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
