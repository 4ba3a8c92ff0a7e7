"""Where the status page is served: at /status/ on the admin address only, as configured, restart to change."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from delivery_daemon.cli import main
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError
from tests.e2e.test_process import reload_with, start_daemon, write_config
from tests.support.status_helpers import PASSWORD

STATUS_ON = {"enabled": True, "password": PASSWORD}


def test_status_page_without_an_admin_address_is_a_config_error() -> None:
    """``status.enabled`` needs ``admin.port``: the page is never served on the public webhook port."""
    with pytest.raises(ConfigError) as caught:
        parse_settings({"status": STATUS_ON}, environ={})
    assert str(caught.value).startswith("admin.port: required when status.enabled is true")
    assert parse_settings({"status": STATUS_ON, "admin": {"port": 9100}}, environ={}).status.enabled


@pytest.mark.parametrize("key", ["host", "port"])
def test_old_status_address_keys_say_what_to_use_instead(
    key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``status.host``/``status.port`` are refused naming the key and pointing at ``admin.<key>`` (exit 2)."""
    path = tmp_path / "old.yaml"
    path.write_text(f"admin: {{port: 9100}}\nstatus: {{enabled: true, password: pw, {key}: 8081}}\n")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"delivery-daemon: error: status.{key}: no longer supported")
    assert f"set admin.{key} instead" in err and len(err.splitlines()) == 1


async def test_serve_mounts_the_status_page_on_the_admin_address(tmp_path: Path) -> None:
    """``serve`` logs ``status.serving`` with the page's URL on the admin port; the webhook port has no page."""
    config = write_config(tmp_path / "c.yaml", "http://127.0.0.1:9/api/v1", db=tmp_path / "d.db")
    with config.open("a") as extra:
        extra.write(f"admin: {{host: 127.0.0.1, port: 0}}\nstatus: {{enabled: true, password: '{PASSWORD}'}}\n")
    daemon = await start_daemon(config)
    try:
        url = (await daemon.wait_for("status.serving"))["url"]
        started = await daemon.wait_for("daemon.started")
        assert url.endswith("/status/") and url == started["metrics"].removesuffix("metrics") + "status/"
        async with httpx.AsyncClient(timeout=30) as client:
            anonymous = await client.get(url)
            assert anonymous.status_code == 303
            assert anonymous.headers["location"] == "/status/login?next=/status/"
            assert (await client.get(f"{url}login")).status_code == 200
            assert (await client.get(url.removesuffix("/"))).headers["location"].endswith("/status/")
            assert (await client.get(f"{daemon.url}/status/login")).status_code == 404
    finally:
        assert await daemon.stop() == 0


async def test_changing_the_status_section_needs_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload that turns the status page on lists ``status`` in ``restart_needed``; the running app is kept."""
    monkeypatch.setenv("DD_TEST_API_KEY", "k" * 40)
    runner, reloaded = await reload_with(tmp_path, "admin: {port: 9100}\nstatus: {enabled: true, password: pw}\n")
    assert "status" in reloaded["restart_needed"]
    assert runner.daemon.settings.status.enabled is False
