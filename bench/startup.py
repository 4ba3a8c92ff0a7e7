"""``python -m bench.startup [--runs N] [--out FILE] [--check]``: how long ``delivery-daemon --version`` and
``delivery-daemon --help`` take, each a new process as a user starts it; medians of ``--runs`` (target 0.3 s).

Measured alongside, in the same rounds: ``python -c pass`` (the interpreter's own start, the floor) and
``delivery-daemon serve --help`` (one command's parser, which imports only that command's group). The cases
alternate within each round, so a burst of load on the shared machine falls on every case alike. One more run of
``--help`` under ``python -X importtime`` lists the packages it spent longest importing, so a regression names its
cause.
``--check`` exits 1 when a median misses the target (a timed unit test would be flaky on a shared machine; the
bench reports, a person or a scheduled job judges).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TARGET_S = 0.3
TARGETED = ("--version", "--help")


def daemon_command() -> list[str]:
    """The console script pip installed beside this interpreter, else ``python -m delivery_daemon``."""
    script = Path(sys.executable).with_name("delivery-daemon")
    return [str(script)] if script.exists() else [sys.executable, "-m", "delivery_daemon"]


def cases() -> dict[str, list[str]]:
    daemon = daemon_command()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "--version": [*daemon, "--version"],
        "--help": [*daemon, "--help"],
        "serve --help": [*daemon, "serve", "--help"],
    }


def time_once(argv: list[str]) -> float:
    """Wall-clock seconds from spawn to exit (stdout discarded; a failure raises with its stderr)."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def heaviest_imports(argv: list[str], top: int = 6) -> list[tuple[str, float]]:
    """The packages (top-level names, ours left out) whose import took longest (cumulative ms) in one run of
    ``argv`` under ``-X importtime``: what a slow start-up spends its time on."""
    args = argv[1:] if argv[0] == sys.executable else ["-m", "delivery_daemon", *argv[1:]]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=True,
    )
    found: list[tuple[str, float]] = []
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")  # "self [us] | cumulative | imported package"
        name = parts[-1].strip()
        if len(parts) == 3 and parts[1].strip().isdigit() and "." not in name and name != "delivery_daemon":
            found.append((name, int(parts[1]) / 1000))
    return sorted(found, key=lambda item: item[1], reverse=True)[:top]


def measure(runs: int) -> dict[str, Any]:
    commands = cases()
    for argv in commands.values():  # warm-up: bytecode compiled, files in the page cache
        time_once(argv)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(runs):
        order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
        for name in order:
            samples[name].append(time_once(commands[name]))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "runs": runs,
        "command": " ".join(daemon_command()),
        "target_s": TARGET_S,
        "seconds": samples,
        "median_s": medians,
        "min_s": {name: min(values) for name, values in samples.items()},
        "met": {name: medians[name] <= TARGET_S for name in TARGETED},
        "heaviest_imports_ms": heaviest_imports(commands["--help"]),
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"start-up of `{result['command']}`, median of {result['runs']} runs (target {TARGET_S:g} s)"]
    for name, median in result["median_s"].items():
        verdict = ("  met" if result["met"][name] else "  MISSED") if name in TARGETED else ""
        lines.append(f"  {name:<16}{median * 1000:>7.0f} ms   min {result['min_s'][name] * 1000:.0f} ms{verdict}")
    lines.append(
        "  slowest imports of --help: " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in result["heaviest_imports_ms"])
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--out", default="bench-startup.json")
    parser.add_argument("--check", action="store_true", help="exit 1 when a median misses the target")
    args = parser.parse_args(argv)
    result = measure(args.runs)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(render(result))
    print(f"results written to {args.out}")
    return 1 if args.check and not all(result["met"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
