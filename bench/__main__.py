"""``python -m bench [--smoke] [--out results.json] [--only NAME ...]``: run the benchmark, print a table, write JSON.

Full run: ingest (32 connections, 2 rounds of 10 s per server), end-to-end at 50 orders/s for 20 s, a 10,000-job
drain, the daemon against the Express and Python inline handlers (``bench/versus.py``), growth at 10^3/10^5/10^6
rows, ingest and drain on PostgreSQL with 1 and 3 replicas — about 8 minutes on a 2-core machine, the fill of 10^6
rows included. ``--smoke`` runs everything but ``pg`` tiny (a few seconds each, for
CI: it checks the benchmark runs and produces the table, not the figures); ``--smoke --only pg`` adds it (~1 min).
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .loadgen import wrk_available
from .processes import start_server
from .report import render_table, targets
from .scenarios import Bench, drain, end_to_end, ingest

SCENARIOS = ("ingest", "e2e", "drain", "versus", "growth", "pg")


def machine() -> dict[str, Any]:
    import os

    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        import uvloop  # noqa: F401 (imported only to see whether it is installed)

        market_loop = "uvloop"
    except ImportError:
        market_loop = "asyncio"
    try:
        import httptools  # noqa: F401 (imported only to see whether it is installed)

        parser = "httptools"
    except ImportError:
        parser = "h11"
    loop = f"asyncio (daemon, baseline); {market_loop} (marketplace)"
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "event_loop": loop,
        "http_parser": parser,
    }


def run(
    smoke: bool, only: tuple[str, ...], workdir: Path, use_wrk: bool, versus_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "smoke": smoke,
        "machine": machine(),
        "started": time.time(),
        "load_tool": "wrk" if use_wrk else "python",
    }
    api_key = secrets.token_hex(20)
    with start_server("market", {"api_key": api_key, "product": "bench-key"}, workdir) as market:
        bench = Bench(workdir=workdir, smoke=smoke, use_wrk=use_wrk, api_key=api_key, market=market)
        if "ingest" in only:
            results["ingest"] = ingest(bench, duration=2.0, rounds=1) if smoke else ingest(bench)
        if "e2e" in only:
            results["e2e"] = end_to_end(bench, seconds=2.0) if smoke else end_to_end(bench)
        if "drain" in only:
            results["drain"] = drain(bench, jobs=200) if smoke else drain(bench)
        if "versus" in only:
            from .versus import versus

            sizes: dict[str, Any] = {"orders": 40, "seconds": 1.0} if smoke else {}
            results["versus"] = versus(bench, **sizes, **(versus_options or {}))
        if "pg" in only:
            from .pg import pg

            results["pg"] = pg(bench, jobs=100, duration=1.0) if smoke else pg(bench)
    if "growth" in only:
        from .growth import growth

        results["growth"] = growth(workdir, sizes=(1_000, 10_000), ops=64, repeats=1) if smoke else growth(workdir)
    results["machine"]["loadavg_at_end"] = __import__("os").getloadavg()
    results["targets"] = targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs (CI)")
    parser.add_argument("--out", default="bench-results.json", help="where to write the JSON results")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=None)
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk exists")
    parser.add_argument(
        "--systems", nargs="+", default=None, help="versus: only these of daemon, express, inline (default: all)"
    )
    parser.add_argument("--versus-rounds", type=int, default=1, help="versus: rounds, alternating order (medians)")
    parser.add_argument("--versus-base", help="versus: also run this checkout's daemon, as the system 'base'")
    parser.add_argument(
        "--versus-profile",
        action="store_true",
        help="versus: sample the daemon's first closed loop with py-spy (bench/profile.py)",
    )
    parser.add_argument("--workdir", help="keep databases and logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    use_wrk = wrk_available() and not args.no_wrk
    versus_options: dict[str, Any] = {"rounds": args.versus_rounds}
    if args.systems:
        versus_options["systems"] = tuple(args.systems)
    if args.versus_base:
        versus_options["base"] = Path(args.versus_base).resolve()
    if args.versus_profile:
        versus_options["profile"] = True
    # Starting PostgreSQL and six daemons is not "tiny": the smoke run leaves pg out unless asked for.
    only = tuple(args.only or (s for s in SCENARIOS if not (args.smoke and s == "pg")))
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run(args.smoke, only, workdir, use_wrk, versus_options)
    else:
        with tempfile.TemporaryDirectory(prefix="delivery-daemon-bench-") as tmp:
            results = run(args.smoke, only, Path(tmp), use_wrk, versus_options)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(render_table(results))
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
