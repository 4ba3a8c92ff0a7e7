"""``delivery-daemon db backup FILE`` and ``db purge``: keep the data, and only as long as it should be kept."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .backup import BackupError, backup
from .clock import SystemClock
from .db import sqlite_path
from .errors import ConfigError
from .operator_db import add_database_options, database_url, load_database_settings, open_engine
from .retention import purge


def cmd_backup(args: argparse.Namespace) -> int:
    source = sqlite_path(database_url(args))
    if source is None:
        raise ConfigError("database.url", "db backup copies SQLite databases; use your database's own tool "
                                          "(e.g. pg_dump) for others")
    if not source.exists():
        raise ConfigError("database.url", f"{source} does not exist (is this the daemon's database?)")
    try:
        result = backup(source, Path(args.file), overwrite=args.force)
    except BackupError as exc:
        print(f"delivery-daemon: {exc}", file=sys.stderr)
        return 1
    print(f"backup written: {result.path} ({result.jobs} orders, {result.size} bytes)")
    return 0


def _retention_days(args: argparse.Namespace) -> float:
    if args.days is not None:
        return float(args.days)
    if args.config:
        import yaml

        document: Any = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        load_database_settings(args.config)  # same errors as the other commands for a broken file
        days = (document.get("retention") or {}).get("days") if isinstance(document, dict) else None
        if isinstance(days, int | float) and days > 0:
            return float(days)
    raise ConfigError("retention.days", "not set: pass --days N or set retention.days in the configuration")


def cmd_purge(args: argparse.Namespace) -> int:
    days = _retention_days(args)
    purged = purge(open_engine(args), SystemClock(), days)
    print(f"purged payload and content of {purged} finished order(s) older than {days:g} days"
          if purged else f"nothing to purge (no finished order older than {days:g} days still has data)")
    return 0


def register(sub: Any) -> None:
    """Add ``db`` and its sub-commands to the CLI."""
    db = sub.add_parser("db", help="back up the database, purge old order data, migrate to PostgreSQL")
    actions = db.add_subparsers(dest="db_command", required=True)

    save = actions.add_parser("backup", help="consistent copy of the SQLite database, safe while the daemon runs")
    save.add_argument("file", metavar="FILE")
    save.add_argument("--force", action="store_true", help="replace FILE if it exists")
    add_database_options(save)
    save.set_defaults(func=cmd_backup)

    clean = actions.add_parser("purge", help="apply the retention policy now")
    clean.add_argument("--days", type=float, help="instead of retention.days from the configuration")
    add_database_options(clean)
    clean.set_defaults(func=cmd_purge)
