"""``delivery-daemon chaos``: the chaos run (:mod:`delivery_daemon.reference.chaos.run`) from the command line.

Exit 0 when every promise held, 1 when the verdict lists a violation, 2 for bad usage (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from delivery_daemon.logs import configure_logging


def cmd_chaos(args: argparse.Namespace) -> int:
    # Imported when it runs: the reference marketplace and its servers would slow every command's start.
    from delivery_daemon.reference.chaos.database import checked_database_url
    from delivery_daemon.reference.chaos.harness import ChaosOptions
    from delivery_daemon.reference.chaos.run import run_chaos

    url = checked_database_url(args.database_url, args.replicas, args.marketplace)
    options = ChaosOptions(
        orders=args.orders,
        kills=args.kills,
        seed=args.seed,
        rate=args.rate,
        timeout=args.timeout,
        workdir=Path(args.workdir) if args.workdir else None,
        database_url=url,
        replicas=args.replicas,
        marketplace=args.marketplace,
    )
    # Only the summary on the terminal: the in-process marketplace's thousands of info lines would slow the run.
    configure_logging("console", "error", stream=sys.stderr)
    verdict = asyncio.run(run_chaos(options))
    return 0 if verdict.ok else 1


def register(sub: Any) -> None:
    chaos = sub.add_parser("chaos", help="SIGKILL the daemon under marketplace faults and check nothing is lost")
    chaos.add_argument("--orders", type=int, default=2000)
    chaos.add_argument("--kills", type=int, default=5)
    chaos.add_argument("--seed", type=int, help="replay a run (the seed is printed first)")
    chaos.add_argument("--rate", type=float, default=100.0, help="orders placed per second")
    chaos.add_argument("--timeout", type=float, default=900.0)
    chaos.add_argument("--workdir", help="keep the database (SQLite) and the daemons' logs here")
    chaos.add_argument(
        "--database-url",
        help="an empty PostgreSQL database to run against "
        "(postgresql+psycopg://user:password@host/db); default: SQLite",
    )
    chaos.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="daemon processes sharing the database, webhooks spread across them (needs PostgreSQL)",
    )
    chaos.add_argument(
        "--marketplace",
        default="softstore",
        choices=(
            "softstore",
            "sellix",
            "shoppy",
            "stripe",
            "standard-webhooks",
            "lemonsqueezy",
            "paddle",
            "virtual-stores",
        ),
        help="whose webhooks; the others deliver to a failing seller endpoint (virtual-stores: and a failing shop API)",
    )
    chaos.set_defaults(func=cmd_chaos)
