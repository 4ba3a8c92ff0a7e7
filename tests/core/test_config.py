"""Configuration: one-line errors naming the key path, ``${ENV}`` resolution, and ``check-config`` as a process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from delivery_daemon.cli import main
from delivery_daemon.clock import ManualClock
from delivery_daemon.compose import default_marketplaces
from delivery_daemon.config import load_settings, parse_settings
from delivery_daemon.errors import ConfigError
from delivery_daemon.generators.discovery import discover
from delivery_daemon.pipeline.stores import build_stores


def store(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "shop",
        "marketplace": "softstore",
        "api_url": "https://api.example/api/v1",
        "api_key": "k" * 20,
        "products": {"p1": {"generator": "pattern"}},
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def config_error(document: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    """The one-line message of the ConfigError that ``document`` raises, from parsing or from building stores."""
    with pytest.raises(ConfigError) as caught:
        settings = parse_settings(document, environ=environ or {})
        build_stores(settings, default_marketplaces(), dict(discover()), ManualClock())
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_api_key_names_path() -> None:
    """A SoftStore store without api_key fails as ``stores[0].api_key: required``."""
    assert config_error({"stores": [store(api_key=None)]}) == (
        "stores[0].api_key: required; expected a secret, best given as ${ENV_VAR}, e.g. ${SOFTSTORE_API_KEY}"
    )


def test_missing_name_names_path() -> None:
    """A required settings field missing from the second store names that store's index."""
    assert config_error({"stores": [store(), store(name=None)]}).startswith("stores[1].name: required; expected ")


def test_env_var_is_resolved() -> None:
    """``${VAR}`` in a value is replaced by the environment's value."""
    settings = parse_settings({"stores": [store(api_key="${SHOP_KEY}")]}, environ={"SHOP_KEY": "from-env-123"})
    assert settings.stores[0].api_key is not None
    assert settings.stores[0].api_key.get_secret_value() == "from-env-123"


def test_missing_env_var_is_error_naming_path() -> None:
    """An unset ``${VAR}`` is an error naming both the key path and the variable."""
    message = config_error({"stores": [store(api_key="${SHOP_KEY}")]}, environ={})
    assert message.startswith("stores[0].api_key: environment variable SHOP_KEY is not set; expected SHOP_KEY set ")


def test_unknown_key() -> None:
    """A misspelt key is refused rather than ignored."""
    assert config_error({"stores": [store(api_kye="x")]}).startswith("stores[0].api_kye: unknown key; expected one of ")
    assert config_error({"workers": {}}).endswith("e.g. worker")


def test_bad_value_names_path() -> None:
    """A value of the wrong type names its key path."""
    assert config_error({"worker": {"lease_seconds": "soon"}}).startswith("worker.lease_seconds: ")


def test_duplicate_store_name() -> None:
    """Two stores with the same name (the same webhook path) are refused at the second one."""
    assert config_error({"stores": [store(), store()]}) == (
        "stores[1].name: duplicate store name 'shop'; expected a name not used by another store, e.g. shop-2"
    )


def test_unknown_marketplace() -> None:
    """A marketplace no adapter is registered for is named with the known ones."""
    message = config_error({"stores": [store(marketplace="ebay")]})
    assert message.startswith("stores[0].marketplace: unknown marketplace 'ebay'")
    assert "softstore" in message


def test_unknown_generator() -> None:
    """A generator no plugin provides is named at the product's path."""
    message = config_error({"stores": [store(products={"p1": {"generator": "nope"}})]})
    assert message.startswith("stores[0].products.p1.generator: unknown generator 'nope'")


def test_bad_template_field() -> None:
    """A template field outside the documented list is refused at load, not at delivery."""
    message = config_error({"stores": [store(products={"p1": {"generator": "pattern", "template": "{secret}"}})]})
    assert message.startswith("stores[0].products.p1.template: unknown field {secret}")


def test_template_attribute_access_refused() -> None:
    """A template cannot reach into Python objects through attribute access."""
    product = {"generator": "pattern", "template": "{order_id.__class__}"}
    assert config_error({"stores": [store(default=product)]}).startswith("stores[0].default.template: ")


def test_product_option_error_path() -> None:
    """A generator option the plugin rejects names ``…products.<id>.options.<option>``."""
    product = {"generator": "pattern", "options": {"pattern": "XX-XX"}}
    message = config_error({"stores": [store(products={"p1": product})]})
    assert message.startswith(
        "stores[0].products.p1.options.pattern: needs at least 8 'X' placeholders to be unguessable; expected "
    )


def test_unknown_product_option() -> None:
    """An option the plugin does not know is refused with its path."""
    product = {"generator": "pattern", "options": {"colour": "red"}}
    assert config_error({"stores": [store(products={"p1": product})]}).startswith(
        "stores[0].products.p1.options.colour: "
    )


def test_bad_database_url() -> None:
    """A database URL SQLAlchemy cannot parse is a config error, not a traceback."""
    assert config_error({"database": {"url": "not a url"}}).startswith("database.url: ")


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    """Unreadable YAML is reported with the file, line and column."""
    path = tmp_path / "bad.yaml"
    path.write_text("stores:\n  - name: s\n   bad: [\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(f"{path}: ")
    assert "(line 3, column 4)" in str(caught.value)


GOOD = """\
database:
  url: sqlite:///{db}
stores:
  - name: shop
    marketplace: softstore
    api_url: https://api.example/api/v1
    api_key: ${{SHOP_KEY}}
    products:
      p1:
        generator: pattern
        template: "Your key: {{keys}}"
"""


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "delivery_daemon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def test_check_config_bad_exits_2_one_line(tmp_path: Path) -> None:
    """``check-config`` on a bad file exits 2 with one stderr line naming the key path, no traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.format(db=tmp_path / "d.db").replace("generator: pattern", "generator: nope"))
    result = run_cli("check-config", "--config", str(path), env={"SHOP_KEY": "secret-shop-key"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "stores[0].products.p1.generator: unknown generator 'nope'" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "text",
    [
        "database: {url: 'not a url'}\n",
        "stores: [{name: shop, marketplace: softstore, api_url: 'https://x/api', api_key: '${NOT_SET}'}]\n",
        "stores:\n  - name: s\n   bad: [\n",
    ],
    ids=["db-url", "env-missing", "yaml"],
)
def test_check_config_errors_never_traceback(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind of configuration error exits 2 with one line on stderr (in-process, to stay fast)."""
    monkeypatch.delenv("NOT_SET", raising=False)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["check-config", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert captured.err.startswith("delivery-daemon: error: ")
    assert captured.out == ""


def test_check_config_good_summarises(tmp_path: Path) -> None:
    """A good file exits 0 with a summary of stores and products, without the API key."""
    path = tmp_path / "good.yaml"
    path.write_text(textwrap.dedent(GOOD.format(db=tmp_path / "d.db")))
    result = run_cli("check-config", "--config", str(path), env={"SHOP_KEY": "secret-shop-key"})
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "store shop: softstore at https://api.example/api/v1" in result.stdout
    assert "product p1: generator pattern" in result.stdout
    assert "secret-shop-key" not in result.stdout + result.stderr
