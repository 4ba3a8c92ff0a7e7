"""``delivery-daemon init``: writes the marketplace's example as config.yaml (store renamed) and a 0600 secrets file
with a placeholder for every ${VAR} it reads, prints the three steps left, and never overwrites a file."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from delivery_daemon.cli import main
from delivery_daemon.cli.init import GENERATED, PLACEHOLDER, SECRET_HINTS, TEMPLATES, env_names
from tests.core.test_config_example import DUMMY_SECRETS, EXAMPLES
from tests.support.offline import offline

VARIANTS = [
    ("softstore", None, "softstore.yaml"),
    ("sellix", None, "sellix-email.yaml"),
    ("sellix", "webhook", "sellix-webhook.yaml"),
    ("shoppy", "email", "shoppy-email.yaml"),
    ("shoppy", "webhook", "shoppy-webhook.yaml"),
    ("stripe", "email", "stripe-email.yaml"),
    ("stripe", "webhook", "stripe-webhook.yaml"),
    ("standard-webhooks", "email", "standard-webhooks-email.yaml"),
    ("standard-webhooks", "webhook", "standard-webhooks-webhook.yaml"),
    ("virtual-stores", "email", "virtual-stores-email.yaml"),
    ("lemonsqueezy", None, "lemonsqueezy-email.yaml"),
    ("polar", "email", "polar-email.yaml"),
    ("paddle", "email", "paddle-email.yaml"),
    ("stripe-checkout", "email", "stripe-checkout-email.yaml"),
]


def init(tmp_path: Path, marketplace: str, channel: str | None = None, store: str | None = None) -> int:
    argv = ["init", "--marketplace", marketplace, "--dir", str(tmp_path)]
    argv += ["--channel", channel] if channel else []
    argv += ["--store", store] if store else []
    return main(argv)


def renamed(example: str, default: str, store: str) -> str:
    """The example with its store called ``store`` where the store's name stands: its name, its webhook path and
    the --store of the commands in the comments."""
    example = example.replace(f"- name: {default} ", f"- name: {store} ")
    example = example.replace(f"--store {default} ", f"--store {store} ")
    return re.sub(rf"/webhooks/{default}(?=[\s.,)])", f"/webhooks/{store}", example)


@pytest.mark.parametrize(("marketplace", "channel", "example"), VARIANTS, ids=[v[2] for v in VARIANTS])
def test_init_writes_the_example_and_a_private_secrets_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], marketplace: str, channel: str | None, example: str
) -> None:
    """config.yaml is the example with the store renamed (nothing else differs); delivery-daemon.env is mode 0600
    with a placeholder (or, for the seller's own webhook secret, a fresh whsec_) for every ${VAR}; the output names
    the three steps: the secrets, check-config, and the webhook URL with the store's path."""
    assert init(tmp_path, marketplace, channel, store="shop-1") == 0
    config = (tmp_path / "config.yaml").read_text()
    original = (EXAMPLES / example).read_text()
    assert config == renamed(original, marketplace, "shop-1") and config != original
    assert "- name: shop-1 " in config and marketplace not in re.findall(r"/webhooks/([\w.-]+)", config)
    env_path = tmp_path / "delivery-daemon.env"
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    values = dict(line.split("=", 1) for line in env_path.read_text().splitlines() if line and line[0] != "#")
    assert list(values) == env_names(config) and values
    for name, value in values.items():
        assert value.startswith("whsec_") and len(value) > 30 if name in GENERATED else value == PLACEHOLDER
    out = capsys.readouterr().out
    steps = re.findall(r"^  (\d)\. ", out, re.M)
    assert steps == ["1", "2", "3"]
    assert str(env_path) in out and f"check-config --config {tmp_path / 'config.yaml'}" in out
    assert "https://<your host>/webhooks/shop-1" in out
    assert all(name in out for name in values)


@pytest.mark.parametrize(("marketplace", "channel", "example"), VARIANTS, ids=[v[2] for v in VARIANTS])
def test_inits_config_passes_check_config_once_the_secrets_are_in(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    marketplace: str,
    channel: str | None,
    example: str,
) -> None:
    """With the secrets filled in, check-config accepts what init wrote, under the new store name (offline)."""
    assert init(tmp_path, marketplace, channel, store="shop-1") == 0
    for name in env_names((tmp_path / "config.yaml").read_text()):
        monkeypatch.setenv(name, DUMMY_SECRETS[name])
    with offline():
        assert main(["check-config", "--config", str(tmp_path / "config.yaml")]) == 0
    assert f"store shop-1: {marketplace}" in capsys.readouterr().out


def test_every_secret_a_template_reads_says_where_it_comes_from() -> None:
    """Each ${VAR} in a template has a hint init prints (where in the dashboard, or that it was generated)."""
    names = {name for path in TEMPLATES.glob("*.yaml") for name in env_names(path.read_text())}
    assert names and names <= set(SECRET_HINTS) and set(DUMMY_SECRETS) == names


@pytest.mark.parametrize("existing", ["config.yaml", "delivery-daemon.env"])
def test_init_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: str) -> None:
    """Either file already there: exit 2, one line naming it, and neither file is written or changed."""
    (tmp_path / existing).write_text("mine\n")
    assert init(tmp_path, "stripe") == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"delivery-daemon: error: {tmp_path / existing} already exists; init never overwrites "
        "(move it away or use --dir)"
    )
    assert [p.name for p in tmp_path.iterdir()] == [existing] and (tmp_path / existing).read_text() == "mine\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--marketplace", "sellix", "--channel", "marketplace"], "--channel: sellix has no delivery API of its own"),
        (["--marketplace", "softstore", "--channel", "email"], "--channel: there is no email template for softstore"),
        (["--marketplace", "stripe", "--store", "my shop"], "--store: 'my shop' cannot be a store name"),
    ],
)
def test_init_refuses_what_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A channel without a template or a bad store name: exit 2, one line saying what to type, nothing written."""
    assert main(["init", "--dir", str(tmp_path / "new"), *argv]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"delivery-daemon: error: {message}") and "expected" in line
    assert not (tmp_path / "new").exists()
