"""The benchmark runs end to end in smoke mode and produces its table and JSON (figures are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.versus import PARTS

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    """``python -m bench --smoke --no-wrk --versus-profile`` exits 0, prints every section and writes every
    scenario's figures, the daemon's profile among them (or why there is none)."""
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--no-wrk", "--versus-profile", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in ("ingest (python", "end-to-end at", "drain of", "versus the inline", "growth (ms", "targets"):
        assert heading in done.stdout
    results = json.loads(out.read_text())
    assert {"ingest", "e2e", "drain", "versus", "growth", "targets"} <= results.keys()
    # The Express peer may be missing (no node/npm): then the result says why; the daemon and Python always run.
    versus = results["versus"]
    for system in ("daemon", "express", "inline"):
        assert system in versus or versus["skipped"][system], system
    for system in ("daemon", "inline"):
        loop = versus[system]["closed_loop"]
        assert loop["delivered"] == loop["orders"] == 40 and loop["cpu_ms_per_order"] > 0, system
    assert set(versus["daemon"]["open_50"]["split_p50_ms"]) == set(PARTS)
    # --versus-profile: a profiled second loop where py-spy is installed, else the reason in "skipped".
    profiled = versus["rounds"][0]["daemon"].get("profiled")
    if "profile" in versus["skipped"]:
        assert profiled is None
    else:
        assert "MainThread" in profiled["profile"]["threads"], profiled
    assert versus["daemon"]["closed_loop"]["other_core_busy"] > 0 and versus["ratios"]["inline"]["cpu_ms_per_order"] > 0
    for server in ("baseline", "daemon", "unstored"):
        figures = results["ingest"][server]
        assert figures["errors"] == 0 and figures["requests"] > 0, server
        assert figures["event_loop_us_per_request"] > 0, server
    # The daemon's database thread does the storing; the unstored variant has nothing for it to do.
    assert results["ingest"]["daemon"]["other_threads_us_per_request"] > 0
    assert results["e2e"]["n"] == results["e2e"]["orders"]
    assert results["drain"]["jobs"] == 200
    assert results["drain"]["event_loop_ms_per_order"] > 0 and results["drain"]["other_threads_ms_per_order"] > 0


def test_client_bench_prints_each_way_and_writes_json(tmp_path: Path) -> None:
    """``python -m bench.client`` (tiny) measures aiohttp, ``call`` and ``call_request`` and writes their ratios."""
    out = tmp_path / "client.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.client", "--requests", "64", "--rounds", "1", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for way in ("aiohttp", "call", "call_request"):
        assert way in done.stdout and results["median_us"][way] > 0
    assert results["ratio_to_aiohttp"]["aiohttp"] == 1.0


def test_startup_bench_times_version_and_help(tmp_path: Path) -> None:
    """``python -m bench.startup`` (2 runs) times ``--version``, ``--help`` and the interpreter alone, in fresh
    processes, and writes the medians and the target verdicts (the figures themselves are not checked here)."""
    out = tmp_path / "startup.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.startup", "--runs", "2", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    for case in ("python -c pass", "--version", "--help", "serve --help"):
        assert case in done.stdout and len(results["seconds"][case]) == 2 and results["median_s"][case] > 0
    assert results["target_s"] == 0.3 and set(results["met"]) == {"--version", "--help"}
    assert results["heaviest_imports_ms"] and "slowest imports of --help" in done.stdout
