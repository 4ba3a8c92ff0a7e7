"""The database as the operator's commands (``orders …``, ``db …``) open it.

Only the ``database`` section of the configuration is read, so these commands work from a shell that lacks the
daemon's secrets (``${API_KEY}`` in a store is not resolved). ``--database URL`` skips the file altogether. A SQLite
file that does not exist is an error rather than a new empty database: a wrong path must not look like "no orders".
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine

from delivery_daemon.cli.options import CONFIG_ENV, add_config_option
from delivery_daemon.config import (
    DatabaseSettings,
    SecuritySettings,
    Settings,
    config_error,
    expect,
    resolve_env,
)
from delivery_daemon.errors import ConfigError
from delivery_daemon.storage.cipher import Cipher, load_cipher
from delivery_daemon.storage.engine import create_db_engine, create_schema, sqlite_path

M = TypeVar("M", bound=BaseModel)


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` (default ``$DELIVERY_DAEMON_CONFIG``) and ``--database URL``."""
    add_config_option(parser, required=False)
    parser.add_argument("--database", help="a database URL, instead of the one in --config")


def load_section(path: str | Path, name: str, model: type[M]) -> M:
    """One section of a configuration file (e.g. ``database``), or a ConfigError naming the key path.

    Only that section is read and resolved, so operator commands do not need the daemon's other secrets.
    """
    try:
        document: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise ConfigError("", f"{path}: invalid YAML") from None
    section = document.get(name, {}) if isinstance(document, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(name, "must be a mapping of keys", *expect(Settings, name))
    try:
        return model.model_validate(resolve_env(section, os.environ, name))
    except ValidationError as exc:
        raise config_error(exc.errors()[0], model, name, section) from None


def load_database_settings(path: str | Path) -> DatabaseSettings:
    """The ``database`` section of a configuration file."""
    return load_section(path, "database", DatabaseSettings)


def database_settings(args: argparse.Namespace) -> DatabaseSettings | str:
    """The config's ``database`` section, or the ``--database`` URL (with the section's defaults)."""
    if args.database:
        return str(args.database)
    if not args.config:
        raise ConfigError("", f"say which database: --config FILE, ${CONFIG_ENV} or --database URL")
    return load_database_settings(args.config)


def database_url(args: argparse.Namespace) -> str:
    database = database_settings(args)
    return database if isinstance(database, str) else database.url


def open_engine(args: argparse.Namespace) -> Engine:
    """An engine on the daemon's existing database (ConfigError if a SQLite file is missing)."""
    database = database_settings(args)
    path = sqlite_path(database if isinstance(database, str) else database.url)
    if path is not None and not path.exists():
        raise ConfigError("database.url", f"{path} does not exist (is this the daemon's database?)")
    engine = create_db_engine(database)
    create_schema(engine)  # a no-op on the daemon's database; makes a fresh one usable
    return engine


def open_cipher(args: argparse.Namespace) -> Cipher | None:
    """The daemon's encryption key, read only: from the config's ``security`` section, else the key file beside a
    SQLite database. None when there is none — unlike the daemon's start, this never creates a key."""
    security = load_section(args.config, "security", SecuritySettings) if args.config else SecuritySettings()
    return read_cipher(security, sqlite_path(database_url(args)))


def read_cipher(security: SecuritySettings, path: Path | None) -> Cipher | None:
    """The configured key, else the key file beside the SQLite database at ``path``; None when neither exists.
    Never creates one: a command run as another user (root) must not leave a key file the daemon cannot read."""
    configured = security.encryption_key_env or security.encryption_key_file
    if configured or (path is not None and path.with_name(path.name + ".key").exists()):
        return load_cipher(security, path)
    return None
