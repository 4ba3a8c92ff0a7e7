"""The shipped example configuration and the configuration page stay true to the settings model."""

from __future__ import annotations

import re
from pathlib import Path

from delivery_daemon.config import Settings, load_settings

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
