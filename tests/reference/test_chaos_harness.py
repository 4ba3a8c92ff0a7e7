"""The chaos harness gives each killable daemon a port that no outgoing connection can take while it is down."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from delivery_daemon.http.serving import bind_socket
from delivery_daemon.reference.chaos import harness


def test_a_restart_port_is_free_and_below_the_ephemeral_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port is bindable and below the kernel's ephemeral range, from which connect() picks local ports."""
    ports = [harness.restart_port(random.Random(seed)) for seed in range(20)]
    low = int(harness.EPHEMERAL_RANGE.read_text().split()[0]) if harness.EPHEMERAL_RANGE.exists() else 32_768
    assert all(harness.LOWEST_PORT <= port < low for port in ports)
    with bind_socket("127.0.0.1", ports[0]):
        pass

    narrow = tmp_path / "range"
    narrow.write_text("20000\t60999\n")
    monkeypatch.setattr(harness, "EPHEMERAL_RANGE", narrow)
    assert all(harness.LOWEST_PORT <= harness.restart_port() < 20_000 for _ in range(20))


def test_a_taken_port_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Of two candidate ports, the one a socket holds is never returned."""
    first = harness.restart_port(random.Random(7))
    while True:  # two free neighbours: the candidates
        try:
            bind_socket("127.0.0.1", first + 1).close()
            break
        except OSError:
            first = harness.restart_port()
    narrow = tmp_path / "range"
    narrow.write_text(f"{first + 2}\t60999\n")
    monkeypatch.setattr(harness, "EPHEMERAL_RANGE", narrow)
    monkeypatch.setattr(harness, "LOWEST_PORT", first)
    with bind_socket("127.0.0.1", first):
        assert {harness.restart_port(random.Random(seed)) for seed in range(10)} == {first + 1}
