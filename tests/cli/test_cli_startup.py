"""The command line starts light: ``--version`` and ``--help`` import none of the daemon's heavy dependencies, and the
light parser lists every command exactly as the whole one does. (How long they take is measured by
``python -m bench.startup``, not here: a timed test would be flaky on a shared machine.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from delivery_daemon.cli import COMMAND_GROUPS, build_parser

HEAVY = (
    "sqlalchemy",
    "pydantic",
    "structlog",
    "httpx",
    "yaml",
    "asyncio",
    "delivery_daemon.config",
    "delivery_daemon.storage",
)


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["serve", "--help"], ["check-config", "--help"]])
def test_version_and_help_import_nothing_heavy(argv: list[str]) -> None:
    """In a fresh interpreter, answering ``argv`` loads none of :data:`HEAVY` (each costs tens to hundreds of ms)."""
    probe = f"""
import sys
from delivery_daemon.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    assert exc.code == 0, exc.code
loaded = sorted(name for name in sys.modules if any(name == h or name.startswith(h + ".") for h in {HEAVY!r}))
print("LOADED", loaded, file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert "LOADED []" in done.stderr, done.stderr[-2000:]


def test_the_light_parser_lists_every_command_as_the_whole_one_does() -> None:
    """The help lines in COMMAND_GROUPS are those the modules register: ``--help`` reads the same either way, and
    naming any command builds a parser whose top-level help is the whole parser's."""
    whole = build_parser().format_help()
    assert build_parser("").format_help() == whole
    for group in COMMAND_GROUPS:
        for command in group.commands:
            assert build_parser(command).format_help() == whole, command


def parsed(command: str | None, argv: list[str]) -> dict[str, object]:
    """What ``argv`` parses to, the command function by name (``orders`` wraps each in a fresh closure)."""
    values = vars(build_parser(command).parse_args(argv))
    return {**values, "func": getattr(values["func"], "__qualname__", values["func"])}


def test_a_command_parses_as_with_the_whole_parser() -> None:
    """A named command's own arguments are all there: the light parser and the whole one parse alike."""
    for argv in (
        ["orders", "list", "--database", "sqlite:///x.db", "--state", "dead", "--json"],
        ["db", "migrate", "--config", "c.yaml", "--to", "postgresql://u@h/d"],
        ["db", "backup", "b.db", "--config", "c.yaml"],
        ["serve", "--config", "c.yaml", "--log-level", "debug"],
    ):
        assert parsed(argv[0], argv) == parsed(None, argv), argv
