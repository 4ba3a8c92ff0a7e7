"""Start-up check of configured URLs: ``check-config`` and ``serve`` refuse a URL the network policy refuses, with
the key path and exit 2, and accept it once it is explicitly allowed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from delivery_daemon.cli import main
from delivery_daemon.reference.standard_webhooks import new_secret

WEBHOOK_SECRET = new_secret()


def write_config(
    tmp_path: Path,
    *,
    webhook_url: str = "https://hooks.example/orders",
    key_server: str | None = None,
    security: dict[str, Any] | None = None,
) -> Path:
    """A one-store configuration (JSON is YAML) with an outbound webhook and, optionally, an http-generated product."""
    products = {"p1": {"generator": "http", "options": {"url": key_server}}} if key_server else {}
    document = {
        "database": {"url": f"sqlite:///{tmp_path / 'd.db'}"},
        "security": security or {},
        "stores": [
            {
                "name": "shop",
                "marketplace": "standard-webhooks",
                "webhook_secret": new_secret(),
                "delivery": {"channel": "webhook", "webhook": {"url": webhook_url, "secret": WEBHOOK_SECRET}},
                "products": products,
                "default": {"generator": "pattern"},
            }
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"webhook_url": "http://127.0.0.1:9/hook"}, "stores[0].delivery.webhook.url", "loopback"),
        ({"webhook_url": "http://[::ffff:192.168.0.10]/hook"}, "stores[0].delivery.webhook.url", "private"),
        ({"webhook_url": "http://localhost:9/hook"}, "stores[0].delivery.webhook.url", "loopback"),
        ({"key_server": "http://169.254.169.254/keys"}, "stores[0].products.p1.options.url", "metadata"),
        (
            {"key_server": "http://169.254.169.254/keys", "security": {"allow_private_networks": True}},
            "stores[0].products.p1.options.url",
            "metadata",
        ),
    ],
    ids=["loopback", "mapped-private", "dns-loopback", "metadata", "metadata-despite-allow-private"],
)
def test_check_config_refuses_a_refused_url_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict[str, Any], key: str, reason: str
) -> None:
    """A configured URL resolving to a refused address: exit 2, one stderr line with the key path and the reason."""
    assert main(["check-config", "--config", str(write_config(tmp_path, **overrides))]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"delivery-daemon: error: {key}: refused") and reason in lines[0]
    assert "security.allowed_networks" in lines[0]
    assert WEBHOOK_SECRET not in captured.err + captured.out


def test_check_config_accepts_an_explicitly_allowed_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same loopback URLs pass once their network is listed in security.allowed_networks."""
    path = write_config(
        tmp_path,
        webhook_url="http://127.0.0.1:9/hook",
        key_server="http://127.0.0.1:9/keys",
        security={"allowed_networks": ["127.0.0.0/8"]},
    )
    assert main(["check-config", "--config", str(path)]) == 0
    assert "configuration OK" in capsys.readouterr().out


def test_check_config_warns_on_a_name_that_does_not_resolve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A name that does not resolve now is a warning, not a failure (DNS may be down; connections are re-checked)."""
    path = write_config(tmp_path, webhook_url="http://no-such-host.invalid/hook")
    assert main(["check-config", "--config", str(path)]) == 0
    assert "warning: stores[0].delivery.webhook.url: not checked now" in capsys.readouterr().out


def serve_refusal(path: Path) -> str:
    """Run ``serve`` on ``path`` as a real process; assert it exits 2 before listening, with one stderr line and no
    traceback, and return that line."""
    result = subprocess.run(
        [sys.executable, "-m", "delivery_daemon", "serve", "--config", str(path), "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "daemon.started" not in result.stdout
    return lines[0]


def test_serve_refuses_to_start_with_a_refused_url(tmp_path: Path) -> None:
    """``serve`` with a webhook URL on a metadata address exits 2 with one line naming the key, before listening."""
    line = serve_refusal(write_config(tmp_path, webhook_url="http://169.254.169.254/latest"))
    assert "stores[0].delivery.webhook.url: refused" in line and "metadata" in line


LAN_HINT = (
    "expected a public address, or one listed in security.allowed_networks (off by default so that a URL or "
    "DNS name in the configuration cannot reach the daemon's own host or network unless you list it; "
    "docs/marketplaces.md#lan-receivers), e.g. security: {allowed_networks: [192.168.1.20/32]}"
)


def test_check_config_tells_a_lan_receiver_which_switch_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An outbound webhook to the seller's own network: one line naming the key, the address, the switch
    (security.allowed_networks with the exact network) and why it is off; with the network listed it passes."""
    lan = write_config(tmp_path, webhook_url="http://192.168.1.20:8000/o")
    assert main(["check-config", "--config", str(lan)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "delivery-daemon: error: stores[0].delivery.webhook.url: refused to connect to 192.168.1.20: it "
        f"resolves to a private address (192.168.1.20); {LAN_HINT}"
    )
    listed = write_config(
        tmp_path, webhook_url="http://192.168.1.20:8000/o", security={"allowed_networks": ["192.168.1.20/32"]}
    )
    assert main(["check-config", "--config", str(listed)]) == 0  # a literal address: nothing resolved or contacted


def test_serve_tells_a_lan_receiver_which_switch_to_set(tmp_path: Path) -> None:
    """``serve`` refuses to start with the same line check-config prints, before listening."""
    line = serve_refusal(write_config(tmp_path, webhook_url="http://192.168.1.20:8000/o"))
    assert line.startswith("delivery-daemon: error: stores[0].delivery.webhook.url: refused to connect to 192.168.1.20")
    assert line.endswith(LAN_HINT)


async def test_reload_keeps_the_running_stores_when_a_url_is_refused(tmp_path: Path) -> None:
    """SIGHUP with a refused URL in the new file is refused as a whole: the old stores keep running."""
    from delivery_daemon.compose import default_marketplaces
    from delivery_daemon.config import load_settings
    from delivery_daemon.daemon import Runner
    from delivery_daemon.generators.discovery import discover

    path = write_config(tmp_path)
    runner = Runner(path, load_settings(path), marketplaces=default_marketplaces(), plugins=dict(discover()))
    try:
        before = runner.daemon.stores
        write_config(tmp_path, webhook_url="http://10.1.2.3/hook")
        assert await runner.reload() is False
        assert runner.daemon.stores is before
        write_config(tmp_path, webhook_url="https://other-hooks.example/orders")
        assert await runner.reload() is True and runner.daemon.stores is not before
    finally:
        await runner.daemon.aclose()


async def test_a_refused_reload_closes_the_stores_it_built(tmp_path: Path) -> None:
    """The stores built for a refused reload are closed (their HTTP clients), not left open until exit."""
    from delivery_daemon.config import load_settings
    from delivery_daemon.daemon import Runner
    from delivery_daemon.generators.discovery import discover
    from delivery_daemon.marketplaces.standard_webhooks import StandardWebhooks

    class Recorded:
        """Standard Webhooks, remembering each adapter it built and whether it was closed."""

        name = "standard-webhooks"

        def __init__(self) -> None:
            self.built: list[Any] = []
            self.closed: list[Any] = []

        def create(self, context: Any) -> Any:
            adapter = StandardWebhooks().create(context)
            close = adapter.aclose

            async def aclose() -> None:
                self.closed.append(adapter)
                await close()

            adapter.aclose = aclose  # type: ignore[method-assign]  # wrapped to record which adapters close
            self.built.append(adapter)
            return adapter

    recorded = Recorded()
    path = write_config(tmp_path)
    runner = Runner(path, load_settings(path), marketplaces=[recorded], plugins=dict(discover()))
    try:
        write_config(tmp_path, webhook_url="http://10.1.2.3/hook")
        assert await runner.reload() is False
        assert len(recorded.built) == 2 and recorded.closed == [recorded.built[1]]
    finally:
        await runner.daemon.aclose()
    assert {id(a) for a in recorded.closed} == {id(a) for a in recorded.built}
