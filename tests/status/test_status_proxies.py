"""``server.trusted_proxies``: who the status page's login throttle counts, over real sockets of a real ``serve``.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 by default, so anything on loopback could rotate the header and
never hit the per-client limit. The daemon believes it only from configured proxies, and then throttles the
forwarded address.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError
from tests.e2e.test_process import DaemonProcess, start_daemon
from tests.support.status_helpers import PASSWORD, TOKEN


def _config(tmp_path: Path, trusted: str | None) -> Path:
    path = tmp_path / "proxies.yaml"
    proxies = f", trusted_proxies: [{trusted}]" if trusted else ""
    path.write_text(f"""
database: {{url: "sqlite:///{tmp_path / "d.db"}"}}
server: {{host: 127.0.0.1, port: 0{proxies}}}
admin: {{host: 127.0.0.1, port: 0}}
status: {{enabled: true, password: "{PASSWORD}", token: "{TOKEN}", login_failures: 3, login_failures_global: 100}}
stores:
  - {{name: shop, marketplace: softstore, api_url: "http://127.0.0.1:9/api/v1", api_key: "${{DD_TEST_API_KEY}}"}}
""")
    return path


async def _wrong_tokens(daemon: DaemonProcess, forwarded_for: list[str]) -> list[int]:
    """One wrong bearer token per address, each sent with that ``X-Forwarded-For``; the answers' status codes."""
    url = (await daemon.wait_for("status.serving"))["url"]
    async with httpx.AsyncClient(timeout=30) as client:
        return [
            (
                await client.get(url, headers={"Authorization": "Bearer wrong-token", "X-Forwarded-For": address})
            ).status_code
            for address in forwarded_for
        ]


def _clients(daemon: DaemonProcess, event: str) -> list[str]:
    return [e["client"] for e in daemon.events if e["event"] == event]


async def test_rotated_forwarded_for_does_not_reset_the_throttle_by_default(tmp_path: Path) -> None:
    """No proxy configured: X-Forwarded-For is ignored, every guess counts against the TCP peer (127.0.0.1)."""
    daemon = await start_daemon(_config(tmp_path, None))
    try:
        statuses = await _wrong_tokens(daemon, [f"198.51.100.{i}" for i in range(1, 6)])
        assert statuses == [401, 401, 401, 429, 429]
        assert set(_clients(daemon, "status.login_failed")) == {"127.0.0.1"}
        assert set(_clients(daemon, "status.login_throttled")) == {"127.0.0.1"}
    finally:
        assert await daemon.stop() == 0


async def test_a_configured_proxy_is_believed_and_the_forwarded_address_is_throttled(tmp_path: Path) -> None:
    """127.0.0.1 configured as the proxy: each forwarded address is its own client; one of them repeating its
    guesses is throttled by that address (the others are not)."""
    daemon = await start_daemon(_config(tmp_path, "127.0.0.1"))
    try:
        assert await _wrong_tokens(daemon, [f"198.51.100.{i}" for i in range(1, 6)]) == [401] * 5
        assert await _wrong_tokens(daemon, ["203.0.113.7"] * 4) == [401, 401, 401, 429]
        assert await _wrong_tokens(daemon, ["198.51.100.9"]) == [401]
        assert _clients(daemon, "status.login_throttled") == ["203.0.113.7"]
        assert "127.0.0.1" not in _clients(daemon, "status.login_failed")
    finally:
        assert await daemon.stop() == 0


async def test_a_proxy_outside_the_configured_networks_is_not_believed(tmp_path: Path) -> None:
    """Only the listed networks count: a proxy list without loopback leaves loopback's header ignored."""
    daemon = await start_daemon(_config(tmp_path, "10.0.0.0/8"))
    try:
        assert await _wrong_tokens(daemon, [f"198.51.100.{i}" for i in range(1, 5)]) == [401, 401, 401, 429]
    finally:
        assert await daemon.stop() == 0


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = parse_settings({"server": {"trusted_proxies": ["127.0.0.1", "10.1.2.3/8", "::1"]}}, environ={})
    assert settings.server.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "::1/128")
    assert parse_settings({}, environ={}).server.trusted_proxies == ()
    with pytest.raises(ConfigError) as caught:
        parse_settings({"server": {"trusted_proxies": ["proxy.internal"]}}, environ={})
    assert str(caught.value).startswith("server.trusted_proxies")
    assert "a list of IP addresses or networks in CIDR notation" in str(caught.value)
