"""``--config FILE`` or the ``DELIVERY_DAEMON_CONFIG`` environment variable: how every command that reads the
daemon's configuration is told which file, the same way for each (``serve``, ``check-config``, ``orders``, ``db``,
``stock``, ``softstore``, ``plugins list``). ``--config`` wins over the variable.

Standard library only: the parser is built on every run, ``--help`` and ``--version`` too.
"""

from __future__ import annotations

import argparse
import os

CONFIG_ENV = "DELIVERY_DAEMON_CONFIG"


def add_config_option(
    parser: argparse.ArgumentParser, *, required: bool = True, help_text: str = "the daemon's configuration file"
) -> None:
    """Add ``--config FILE`` to ``parser``, defaulting to ``$DELIVERY_DAEMON_CONFIG``. With ``required``, a run
    given neither is refused by :func:`missing_config` (one line naming both, exit 2) rather than by argparse,
    whose message would not mention the variable."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV) or None,
        help=f"{help_text} (default: ${CONFIG_ENV})",
    )
    if required:
        parser.set_defaults(config_required=True)


def missing_config(args: argparse.Namespace) -> str | None:
    """The error for a command that needs a configuration file and was given none; None when it has one."""
    if getattr(args, "config_required", False) and not args.config:
        return f"say which configuration file: --config FILE or {CONFIG_ENV}=FILE"
    return None
