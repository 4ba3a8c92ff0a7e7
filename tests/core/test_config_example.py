"""The shipped example configurations (config.example.yaml and examples/config/) and the configuration page stay true
to the settings model and to what `check-config` accepts."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from delivery_daemon.cli import main
from delivery_daemon.config import Settings, load_settings
from tests.support.offline import offline

ROOT = Path(__file__).resolve().parents[2]


def _leaf_keys(model: type[Settings], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields") and name != "stores":
            keys |= _leaf_keys(annotation, f"{prefix}{name}.")
        elif name != "stores":
            keys.add(f"{prefix}{name}")
    return keys


def test_example_config_is_valid() -> None:
    """config.example.yaml loads (with its secret supplied through the environment)."""
    settings = load_settings(ROOT / "config.example.yaml", environ={"SOFTSTORE_API_KEY": "k" * 40})
    assert settings.stores[0].api_key is not None
    assert settings.stores[0].api_key.get_secret_value() == "k" * 40


def test_every_setting_is_documented() -> None:
    """Every top-level setting key appears in docs/configuration.md and in config.example.yaml."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / "config.example.yaml").read_text()
    for key in sorted(_leaf_keys(Settings)):
        assert f"`{key}`" in page, f"{key} is not documented in docs/configuration.md"
        leaf = key.rsplit(".", 1)[-1]
        assert re.search(rf"^\s*{leaf}:", example, re.M), f"{key} is missing from config.example.yaml"


EXAMPLES = ROOT / "examples" / "config"
DUMMY_SECRETS = {
    "SOFTSTORE_API_KEY": "k" * 40,
    "SELLIX_WEBHOOK_SECRET": "sellix-secret",
    "SHOPPY_WEBHOOK_SECRET": "shoppy-secret",
    "STRIPE_WEBHOOK_SECRET": "whsec_stripe-endpoint-secret",
    "STRIPE_SECRET_KEY": "rk_test_stripe-restricted-key",
    "SMTP_PASSWORD": "smtp-password",
    "PADDLE_WEBHOOK_SECRET": "pdl_ntfset_01h_paddle-destination-secret",
    "PADDLE_API_KEY": "pdl_live_apikey_01h_paddle",
    "VIRTUAL_STORES_PASSWORD": "staff-password",
    "STANDARD_WEBHOOKS_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "DELIVERY_WEBHOOK_SECRET": "whsec_c2VsbGVyLXN5c3RlbS1zaWduaW5nLWtleQ==",
    "LEMONSQUEEZY_WEBHOOK_SECRET": "lemon-signing-secret",
    "LEMONSQUEEZY_API_KEY": "lemon-api-key",
    "POLAR_WEBHOOK_SECRET": "polar_whs_dashboard-secret-0123456789",
    "GUMROAD_PING_TOKEN": "0123456789abcdef0123456789abcdef",
    "GUMROAD_ACCESS_TOKEN": "gumroad-access-token",
    "SELLAUTH_WEBHOOK_SECRET": "sellauth-secret",
}
"""A value of the right form for every ${VAR} an example reads (the whsec_ ones must decode)."""
SHIPPED = [
    "gumroad-email",
    "lemonsqueezy-email",
    "paddle-email",
    "polar-email",
    "sellauth-email",
    "sellix-email",
    "sellix-webhook",
    "shoppy-email",
    "shoppy-webhook",
    "softstore",
    "standard-webhooks-email",
    "standard-webhooks-webhook",
    "stripe-checkout-email",
    "stripe-email",
    "stripe-webhook",
    "virtual-stores-email",
]


def example_paths() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def test_there_is_an_example_for_every_marketplace_and_channel() -> None:
    """softstore through its own API; sellix, shoppy, stripe and standard-webhooks by email and by webhook;
    virtual-stores, stripe-checkout, lemonsqueezy, polar, paddle, gumroad and sellauth by email."""
    assert [path.stem for path in example_paths()] == SHIPPED


@pytest.mark.parametrize("path", example_paths(), ids=lambda path: path.stem)
def test_every_example_passes_check_config_without_contacting_anything(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check-config` (the real CLI) accepts each example with dummy secrets from the environment; nothing leaves the
    machine: the only hosts it tries (outbound webhook names resolved, SoftStore's status asked) are the example's
    own, refused by the fence before a packet is sent."""
    text = path.read_text()
    values = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for name in set(re.findall(r"\$\{([A-Z_]+)\}", values)):
        monkeypatch.setenv(name, DUMMY_SECRETS[name])
    monkeypatch.chdir(path.parent)  # the example's relative database path must not create anything
    with offline() as attempted:
        assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    document = yaml.safe_load(text)
    [store] = document["stores"]
    channel = store["delivery"]["channel"]
    sink = store["marketplace"] if channel == "marketplace" else channel
    assert f"store {store['name']}: {store['marketplace']}" in out and f"delivers through {sink}\n" in out
    contacted = {"webhook": lambda: store["delivery"]["webhook"]["url"], "marketplace": lambda: store["api_url"]}
    expected = {urlsplit(contacted[channel]()).hostname} if channel in contacted else set()
    assert set(attempted) == expected  # tried (and refused by the fence): exactly the example's own host
    assert sorted(p.name for p in EXAMPLES.iterdir()) == [f"{stem}.yaml" for stem in SHIPPED]


@pytest.mark.parametrize("path", example_paths(), ids=lambda path: path.stem)
def test_every_example_shows_its_secrets_and_channel(path: Path) -> None:
    """Secrets come from ${VAR}; a signed-body marketplace shows webhook_secret; the channel named in the file name
    shows its own settings (delivery.email / delivery.webhook), and a webhook example the LAN switch."""
    text = path.read_text()
    [store] = yaml.safe_load(text)["stores"]
    secrets = [store.get("api_key"), store.get("webhook_secret")]
    assert any(isinstance(value, str) and re.fullmatch(r"\$\{[A-Z_]+\}", value) for value in secrets)
    if store["marketplace"] != "softstore":
        assert store["webhook_secret"].startswith("${")
    channel = path.stem.rsplit("-", 1)[-1] if "-" in path.stem and path.stem != "standard-webhooks" else "marketplace"
    assert store["delivery"]["channel"] == channel
    if channel in ("email", "webhook"):
        settings = store["delivery"][channel]
        assert (settings["password"] if channel == "email" else settings["secret"]).startswith("${")
    if channel == "webhook":
        assert "allowed_networks" in text and "docs/marketplaces.md#lan-receivers" in text
    if store["marketplace"] == "sellix":
        assert "product:dynamic" in text and "sync_budget" in store


@pytest.mark.parametrize("path", example_paths(), ids=lambda path: path.stem)
def test_every_example_is_the_template_init_writes(path: Path) -> None:
    """examples/config/ and the templates `delivery-daemon init` ships are the same files, byte for byte."""
    from delivery_daemon.cli.init import TEMPLATES

    assert (TEMPLATES / path.name).read_bytes() == path.read_bytes()
    assert sorted(p.name for p in TEMPLATES.glob("*.yaml")) == [p.name for p in example_paths()]
