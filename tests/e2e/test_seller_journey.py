"""A seller's first hour on each marketplace, as issue #22 describes it: ``init`` in an empty directory, the secrets
filled in, ``check-config`` on what init wrote, then ``demo --marketplace`` for that marketplace, all through the
real CLI, in a temporary directory, sending nothing off the machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from delivery_daemon.cli import main
from tests.core.test_config_example import DUMMY_SECRETS
from tests.support.offline import offline

JOURNEYS = [
    "softstore",
    "sellix",
    "shoppy",
    "stripe",
    "stripe-checkout",
    "standard-webhooks",
    "virtual-stores",
    "gumroad",
    "sellauth",
]


@pytest.mark.parametrize("marketplace", JOURNEYS)
def test_init_then_check_config_then_demo(
    marketplace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """init writes config.yaml and a 0600 secrets file; with the placeholders replaced by real-looking secrets the
    written config passes check-config (offline); the marketplace's demo then delivers every order exactly once."""
    assert main(["init", "--marketplace", marketplace, "--store", "my-shop", "--dir", str(tmp_path)]) == 0
    steps = capsys.readouterr().out
    assert "check-config" in steps and "/webhooks/my-shop" in steps
    env_file = tmp_path / "delivery-daemon.env"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            # The seller pastes their secrets over init's placeholders; init's own generated ones are kept.
            monkeypatch.setenv(name, DUMMY_SECRETS[name] if name in DUMMY_SECRETS and "whsec_" not in value else value)
    monkeypatch.chdir(tmp_path)  # the config's relative database path stays in the temporary directory
    with offline():
        assert main(["check-config", "--config", str(tmp_path / "config.yaml")]) == 0
    assert "configuration OK" in capsys.readouterr().out
    assert main(["demo", "--marketplace", marketplace, "--orders", "2"]) == 0
    assert "exactly once" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path))[:2] == ["config.yaml", "delivery-daemon.env"]
