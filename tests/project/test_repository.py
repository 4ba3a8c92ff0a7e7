"""The checkout itself: no merge conflict markers left in any tracked text file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKERS = ("<<<<<<< ", ">>>>>>> ")


def test_no_conflict_markers_in_tracked_files() -> None:
    """A merge that committed conflict markers (it happened to README.md once) fails CI, not a reader."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (CI runs on a clone)")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    found = []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        for number, line in enumerate(data.decode(errors="replace").splitlines(), start=1):
            if line.startswith(MARKERS):
                found.append(f"{name.decode()}:{number}")
    assert found == []
