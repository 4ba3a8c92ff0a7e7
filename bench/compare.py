"""``python -m bench.compare OTHER_CHECKOUT``: this checkout's daemon against another's, alternating, same run.

On a shared machine absolute figures drift with the neighbours' load from one minute to the next; alternating the
two daemons round by round under the same load generator makes the *ratio* between them the trustworthy figure.
Ingest: receiver-only daemons, 32 connections, ``--rounds`` x ``--seconds`` each, alternating. Drain: ``--jobs``
queued per daemon, then drained by that daemon, alternating. Prints medians and the ratio this / other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .loadgen import run_load, wrk_available
from .processes import ROOT, start_server
from .scenarios import STORE, Bench, _post_all, _signed_bodies, _wait_delivered


def _drain_once(bench: Bench, root: Path, name: str, jobs: int) -> float:
    payloads = bench.place_orders(jobs)
    spec = bench.daemon_spec(name, start_worker=False)
    with start_server("daemon", spec, bench.workdir, root=root) as receiver:
        asyncio.run(_post_all(f"{receiver.url}/webhooks/{STORE}", payloads))
    before = bench.delivered_count()
    with start_server("daemon", bench.daemon_spec(name), bench.workdir, root=root):
        ready = time.time()
        _wait_delivered(bench, before + jobs, 600)
    accepted = bench.accepted([p["id_order"] for p in payloads])
    return jobs / (max(accepted.values()) - ready)


def compare(other: Path, workdir: Path, *, rounds: int, seconds: float, jobs: int, use_wrk: bool) -> dict[str, Any]:
    roots = {"this": ROOT, "other": other}
    api_key = secrets.token_hex(20)
    out: dict[str, Any] = {
        "other": str(other),
        "ingest_rps": {"this": [], "other": []},
        "drain_per_s": {"this": [], "other": []},
    }
    with start_server("market", {"api_key": api_key, "product": "bench-key"}, workdir) as market:
        bench = Bench(workdir=workdir, smoke=False, use_wrk=use_wrk, api_key=api_key, market=market)
        for round_ in range(rounds):
            # ABBA: the checkout that goes first swaps every round, so whatever favours the first (or the second)
            # slot of a round, e.g. a machine that speeds up or slows down during a round, is shared by both sides.
            order = list(roots.items()) if round_ % 2 == 0 else list(reversed(roots.items()))
            for name, root in order:
                spec = bench.daemon_spec(f"cmp-ingest-{name}-{round_}", start_worker=False)
                with start_server("daemon", spec, workdir, root=root) as daemon:
                    url = f"{daemon.url}/webhooks/{STORE}"
                    run_load(
                        url,
                        _signed_bodies(bench, 500, workdir / "w.jsonl"),
                        connections=8,
                        duration=1.0,
                        use_wrk=use_wrk,
                    )
                    bodies = _signed_bodies(bench, int(seconds * 3000) + 1000, workdir / f"cmp-{name}.jsonl")
                    result = run_load(url, bodies, connections=32, duration=seconds, use_wrk=use_wrk)
                out["ingest_rps"][name].append(result["rps"])
            for name, root in order:
                out["drain_per_s"][name].append(_drain_once(bench, root, f"cmp-drain-{name}-{round_}", jobs))
    for key in ("ingest_rps", "drain_per_s"):
        this, other_ = statistics.median(out[key]["this"]), statistics.median(out[key]["other"])
        out[key]["median_this"], out[key]["median_other"], out[key]["ratio"] = this, other_, this / other_
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("other", help="path of the other checkout (e.g. a git worktree of main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--out", default="bench-compare.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="delivery-daemon-compare-") as tmp:
        result = compare(
            Path(args.other).resolve(),
            Path(tmp),
            rounds=args.rounds,
            seconds=args.seconds,
            jobs=args.jobs,
            use_wrk=wrk_available(),
        )
    Path(args.out).write_text(json.dumps(result, indent=2))
    for key in ("ingest_rps", "drain_per_s"):
        r = result[key]
        print(
            f"{key}: this {r['median_this']:.0f}, other {r['median_other']:.0f}, ratio {r['ratio']:.2f} "
            f"(rounds this {[round(v) for v in r['this']]}, other {[round(v) for v in r['other']]})"
        )


if __name__ == "__main__":
    main()
