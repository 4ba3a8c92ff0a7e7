"""docs/operations.md lists every log event the daemon emits (the reference marketplace's own events aside)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CALL = re.compile(r"""\.(?:debug|info|warning|error|exception|critical)\(\s*["']([a-z_]+\.[a-z_.]+)["']""")
CHOSEN = re.compile(r"""["']([a-z_]+\.[a-z_]+)["'] if .+ else ["']([a-z_]+\.[a-z_]+)["']""")


def emitted() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "delivery_daemon").rglob("*.py"):
        if "reference" in path.parts:
            continue
        text = path.read_text()
        names.update(CALL.findall(text))
        for pair in CHOSEN.findall(text):
            names.update(name for name in pair if name.split(".")[0] == "webhook")
    return names


def test_every_event_is_documented() -> None:
    """Each event name found in a log call has a row in docs/operations.md."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    names = emitted()
    assert {"webhook.accepted", "delivery.succeeded", "config.reload_failed"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in docs)
    assert not missing, f"document these events in docs/operations.md: {missing}"
