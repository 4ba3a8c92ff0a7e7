"""``delivery-daemon db migrate --to postgresql://…``: copy the daemon's SQLite database into PostgreSQL.

Every table the daemon declares is copied row for row, ids included, in one transaction on the target, and
verified before it commits (:func:`~delivery_daemon.storage.transfer.copy_database`). The target must be empty
(existing jobs make the command refuse), so a copy is never merged into live data. A daemon still running against
the source waits rather than writing orders the copy would miss — but the daemon must be stopped for the
switch-over anyway (see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from delivery_daemon.cli.options import add_config_option
from delivery_daemon.config import load_settings
from delivery_daemon.storage.engine import create_db_engine, sqlite_path, with_driver
from delivery_daemon.storage.transfer import MigrateError, copy_database


def target_url(raw: str) -> str:
    """A SQLAlchemy URL for ``raw``: ``postgresql://`` gets the psycopg driver; anything not PostgreSQL is refused."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise MigrateError("--to: not a database URL (expected postgresql://user:password@host/dbname)") from None
    if url.get_backend_name() != "postgresql":
        raise MigrateError(f"--to: the target must be a PostgreSQL URL, not {url.get_backend_name()}")
    return with_driver(raw)


def cmd_db_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        url = target_url(args.to)
    except MigrateError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 2
    shown = make_url(url).render_as_string(hide_password=True)
    source_engine = create_db_engine(settings.database)
    target_engine = create_db_engine(url)
    try:
        report = copy_database(source_engine, target_engine)
    except MigrateError as exc:
        print(f"delivery-daemon: error: {exc}", file=sys.stderr)
        return 1
    finally:
        source_engine.dispose()
        target_engine.dispose()
    print(f"copied into {shown} and verified:")
    for name, count in report.tables.items():
        print(f"  {name}: {count} rows")
    print("  jobs by state: " + (", ".join(f"{s} {n}" for s, n in sorted(report.job_states.items())) or "none"))
    key_file = generated_key_file(settings)
    if key_file is not None:
        # Payloads and content were copied still encrypted with the key generated next to the SQLite file; a
        # PostgreSQL database has no such file, so without this setting they could not be read.
        print(f"next: set security.encryption_key_file to {key_file} (the copied orders are encrypted with it)")
    print(f"next: set database.url to {shown} (password included) and start the daemon")
    return 0


def generated_key_file(settings: Any) -> Path | None:
    """The key file the daemon generated next to the SQLite database, if no key is configured and it exists."""
    security = settings.security
    if security.encryption_key_env or security.encryption_key_file:
        return None
    database = sqlite_path(settings.database.url)
    if database is None:
        return None
    key = database.with_name(database.name + ".key")
    return key.resolve() if key.exists() else None


def _subparsers(parser: argparse.ArgumentParser) -> Any:
    # argparse has no public way to reach an existing parser's sub-commands; this is its documented structure.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="db_command", required=True)


def register_db_migrate(sub: Any) -> None:
    """Add ``db migrate`` under the ``db`` command, creating ``db`` only if another feature has not already."""
    db = sub.choices.get("db") or sub.add_parser("db", help="database maintenance")
    migrate = _subparsers(db).add_parser(
        "migrate", help="copy the configured SQLite database into an empty PostgreSQL database and verify it"
    )
    add_config_option(migrate)
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://user:password@host:port/dbname")
    migrate.set_defaults(func=cmd_db_migrate)
