"""docs/marketplaces.md gives every supported marketplace's seller the same parts (set up, fields, refunds/disputes/
duplicates, log events, troubleshooting for 403/409/422), every link into it resolves, and the README's first screen
says which marketplaces are supported and links their set-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from delivery_daemon.cli.init import MARKETPLACES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "marketplaces.md"
PARTS = ("**Set up.**", "**Fields.**", "**Refunds, disputes, duplicates.**", "**Log events.**", "**Troubleshooting.**")


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections() -> dict[str, str]:
    """Level-2 and level-3 sections of the doc by anchor (a level-2 section's text includes its subsections)."""
    text = DOC.read_text()
    found: dict[str, str] = {}
    for match in re.finditer(r"^(#{2,3}) (.+)$", text, re.M):
        level = len(match.group(1))
        rest = text[match.end() :]
        end = re.search(rf"^#{{2,{level}}} ", rest, re.M)
        found[anchor(match.group(2))] = rest[: end.start()] if end else rest
    return found


@pytest.mark.parametrize("name", list(MARKETPLACES))
def test_every_marketplace_has_the_same_parts_for_a_seller(name: str) -> None:
    """Each marketplace's section (the one init points to) has every part, and its troubleshooting covers 403, 409
    and 422 — the answers a seller sees in the marketplace's webhook log."""
    section = sections()[MARKETPLACES[name].docs]
    for part in PARTS:
        assert part in section, f"{name}: no {part}"
    trouble = section.split("**Troubleshooting.**", 1)[1]
    for status in ("403", "409", "422"):
        assert re.search(rf"^\| [^|]*{status}", trouble, re.M), f"{name}: troubleshooting says nothing about {status}"
    assert "https://<your host>/webhooks/" in section.split("**Fields.**", 1)[0] or name == "softstore"


def test_log_events_named_are_real() -> None:
    """Every event the doc tells a seller to look for is one the daemon logs (documented in docs/operations.md)."""
    operations = (ROOT / "docs" / "operations.md").read_text()
    paragraphs = re.findall(r"\*\*Log events\.\*\*(.+?)(?:\n\n|\*\*)", DOC.read_text(), re.S)
    named = {name for paragraph in paragraphs for name in re.findall(r"`([a-z_]+\.[a-z_]+)`", paragraph)}
    assert len(paragraphs) == len(MARKETPLACES) and len(named) > 15
    assert sorted(name for name in named if f"`{name}`" not in operations) == []


def test_every_link_into_the_doc_resolves() -> None:
    """Each ``docs/marketplaces.md#anchor`` in the code, the templates, the README and the docs names a heading."""
    anchors = set(sections())
    sources = [
        *ROOT.joinpath("delivery_daemon").rglob("*.py"),
        *ROOT.joinpath("delivery_daemon").rglob("*.yaml"),
        ROOT / "README.md",
        *ROOT.joinpath("docs").glob("*.md"),
    ]
    links = {
        (path.name, link) for path in sources for link in re.findall(r"marketplaces\.md#([\w-]+)", path.read_text())
    }
    assert ("guard.py", "lan-receivers") in links
    assert sorted((name, link) for name, link in links if link not in anchors) == []


def test_every_example_is_linked_and_the_readme_points_here() -> None:
    """The doc links each example config; the README's first screen names the marketplaces and links each one's
    section and init; the README's troubleshooting lives here now."""
    text = DOC.read_text()
    for path in sorted((ROOT / "examples" / "config").glob("*.yaml")):
        assert f"(../examples/config/{path.name})" in text
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:25])
    for section in {m.docs for m in MARKETPLACES.values()}:
        assert f"(docs/marketplaces.md#{section})" in first_screen
    assert "delivery-daemon init" in first_screen
    assert "| `webhook.rejected` with status 403 |" not in readme and "| `webhook.rejected` with status 403 |" in text
