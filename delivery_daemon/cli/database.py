"""``delivery-daemon db backup FILE``, ``db purge`` and ``db reencrypt``: keep the data, only as long as it should
be kept, and sealed under the current key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from delivery_daemon.cli.connect import (
    add_database_options,
    database_url,
    load_database_settings,
    open_cipher,
    open_engine,
)
from delivery_daemon.clock import SystemClock
from delivery_daemon.errors import ConfigError
from delivery_daemon.storage.backup import BackupError, backup
from delivery_daemon.storage.engine import sqlite_path
from delivery_daemon.storage.rekey import RekeyError, compact, reencrypt
from delivery_daemon.storage.retention import purge


def cmd_backup(args: argparse.Namespace) -> int:
    source = sqlite_path(database_url(args))
    if source is None:
        raise ConfigError(
            "database.url", "db backup copies SQLite databases; use your database's own tool (e.g. pg_dump) for others"
        )
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
        document: Any = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        load_database_settings(args.config)  # same errors as the other commands for a broken file
        days = (document.get("retention") or {}).get("days") if isinstance(document, dict) else None
        if isinstance(days, int | float) and days > 0:
            return float(days)
    raise ConfigError("retention.days", "not set: pass --days N or set retention.days in the configuration")


def cmd_purge(args: argparse.Namespace) -> int:
    days = _retention_days(args)
    purged = purge(open_engine(args), SystemClock(), days)
    print(
        f"purged payload and content of {purged} finished order(s) older than {days:g} days"
        if purged
        else f"nothing to purge (no finished order older than {days:g} days still has data)"
    )
    return 0


def cmd_reencrypt(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise ConfigError("--batch", "must be at least 1")
    cipher = open_cipher(args)
    if cipher is None:
        raise ConfigError(
            "security.encryption_key_file",
            "no encryption key configured or found beside the database: there is nothing to re-encrypt with",
        )
    engine = open_engine(args)
    try:
        report = reencrypt(engine, SystemClock(), cipher, batch=args.batch)
        compacted = compact(engine) if args.compact else None
    except RekeyError as exc:
        print(f"delivery-daemon: error: {exc} (rows done so far stay re-encrypted; run again)", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(
        f"re-encrypted under key {cipher.current}: {report.jobs} order(s), {report.stock_keys} stock key(s), "
        f"{report.secrets} daemon secret(s)"
    )
    if compacted is not None:
        print("database compacted" if compacted else "compaction failed (see the log); run it again when idle")
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

    rekey = actions.add_parser("reencrypt", help="re-seal stored content and stock keys under the current key")
    rekey.add_argument("--batch", type=int, default=500, help="rows per transaction (default 500)")
    rekey.add_argument(
        "--compact",
        action="store_true",
        help="then rewrite the database (SQLite VACUUM, PostgreSQL VACUUM FULL) so old pages go",
    )
    add_database_options(rekey)
    rekey.set_defaults(func=cmd_reencrypt)
