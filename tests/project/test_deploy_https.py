"""The HTTPS deployment files in deploy/ (docs/deployment.md) agree with each other and with the image.

``docker compose config`` validates deploy/compose.yaml where Docker Compose is installed; everywhere the same
promises are checked from the parsed files: which ports are published, what is mounted where, that Caddy and nginx
forward to the daemon's address, and that the daemon believes X-Forwarded-For from its proxy alone. Nothing is
started or contacted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml

from delivery_daemon.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def _daemon_settings(tmp_path: Path) -> Any:
    """deploy/config.yaml as the container reads it: the API key from the secret file compose.yaml names."""
    secret = tmp_path / "softstore_api_key"
    secret.write_text("k" * 40 + "\n")
    environment = _compose()["services"]["delivery-daemon"]["environment"]
    return load_settings(
        DEPLOY / "config.yaml", environ={name: str(secret) for name in environment if name.endswith("_FILE")}
    )


def _docker_compose() -> list[str] | None:
    """``docker compose`` (v2, the Compose Specification) when it works here; the old ``docker-compose`` v1 does not
    know the file's top-level ``name`` and is not used."""
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60, check=False)
    return ["docker", "compose"] if probe.returncode == 0 else None


def test_compose_config_validates(tmp_path: Path) -> None:
    """``docker compose -f deploy/compose.yaml config -q`` accepts the file (a copy, with its secret file present)."""
    command = _docker_compose()
    if command is None:
        pytest.skip("docker compose is not installed; test_compose_services_ports_and_volumes checks the file")
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    (copy / "secrets" / "softstore_api_key").write_text("k" * 40 + "\n")
    (tmp_path / "Dockerfile").write_text((ROOT / "Dockerfile").read_text())  # the build context is deploy/..
    result = subprocess.run(
        [*command, "-f", str(copy / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "DOMAIN": "keys.example.com"},
    )
    assert result.returncode == 0, result.stderr


def test_compose_services_ports_and_volumes() -> None:
    """Two services; only Caddy publishes ports (80, 443); the daemon's data and config are where the image wants
    them, Caddy keeps its certificates on a volume, and every named volume and secret is declared."""
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"delivery-daemon", "caddy"}
    daemon, caddy = services["delivery-daemon"], services["caddy"]
    assert "ports" not in daemon  # reachable from the compose network only
    assert {port.split(":")[0] for port in caddy["ports"]} == {"80", "443"}
    assert caddy["image"].startswith("caddy:2")
    assert caddy["depends_on"]["delivery-daemon"]["condition"] == "service_healthy"
    assert caddy["environment"]["DOMAIN"].startswith("${DOMAIN:?")  # refused without a host name

    context = (DEPLOY / daemon["build"]["context"]).resolve()
    assert context == ROOT  # the repository's Dockerfile
    image = list(dockerfile.parse_file(str(context / "Dockerfile")))
    volume = next(c for c in image if c.cmd == "VOLUME").value[0]
    config_path = next(c for c in reversed(image) if c.cmd == "CMD").value[2]
    assert f"data:{volume}" in daemon["volumes"]
    assert f"./config.yaml:{config_path}:ro" in daemon["volumes"]
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"] and "caddy_data:/data" in caddy["volumes"]
    named = {
        mount.split(":")[0]
        for service in services.values()
        for mount in service["volumes"]
        if not mount.startswith(".")
    }
    assert named == set(compose["volumes"])
    assert set(daemon["secrets"]) == set(compose["secrets"])
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith("./secrets/")
        assert f"/run/secrets/{name}" in daemon["environment"].values()  # read through NAME_FILE
    assert (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]


def test_caddy_forwards_the_webhooks_to_the_daemon() -> None:
    """The Caddyfile's reverse_proxy target is the daemon's service name and configured port, for /webhooks/*."""
    text = "\n".join(line.split("#", 1)[0] for line in (DEPLOY / "Caddyfile").read_text().splitlines())
    assert re.search(r"^\{\$DOMAIN\} \{", text, re.M)
    assert re.findall(r"handle (\S+) \{\s*reverse_proxy (\S+)", text) == [("/webhooks/*", "delivery-daemon:8080")]
    assert re.search(r"handle \{\s*respond 404", text)


def test_daemon_config_trusts_exactly_its_proxy(tmp_path: Path) -> None:
    """deploy/config.yaml loads; the daemon listens where Caddy forwards, keeps its database on the volume, and
    believes X-Forwarded-For from Caddy's fixed address only."""
    settings = _daemon_settings(tmp_path)
    compose = _compose()
    caddy_address = compose["services"]["caddy"]["networks"]["edge"]["ipv4_address"]
    assert settings.server.trusted_proxies == (f"{caddy_address}/32",)
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8080)
    assert settings.database.url.startswith("sqlite:////var/lib/delivery-daemon/")
    assert settings.stores[0].api_key is not None and settings.stores[0].api_key.get_secret_value() == "k" * 40
    subnet = compose["networks"]["edge"]["ipam"]["config"][0]["subnet"]
    assert caddy_address.rsplit(".", 1)[0] == subnet.split("/")[0].rsplit(".", 1)[0]


def test_nginx_server_block_forwards_to_the_default_address() -> None:
    """deploy/nginx.conf: TLS on 443, HTTP redirected, /webhooks/ to 127.0.0.1 and the daemon's default port,
    X-Forwarded-For replaced (not appended), and nothing else proxied."""
    from delivery_daemon.config import ServerSettings

    text = "\n".join(line.split("#", 1)[0] for line in (DEPLOY / "nginx.conf").read_text().splitlines())
    assert text.count("listen 443 ssl;") == 1 and "return 301 https://$host$request_uri;" in text
    assert re.findall(r"proxy_pass (\S+);", text) == [f"http://127.0.0.1:{ServerSettings().port}"]
    assert re.search(r"location /webhooks/ \{[^}]*proxy_set_header X-Forwarded-For \$remote_addr;", text)
    assert "proxy_add_x_forwarded_for" not in text
    assert re.search(r"location / \{\s*return 404;", text)


def test_documented_signature_one_liner_signs_as_softstore() -> None:
    """The Python one-liner docs/deployment.md gives for curl computes SoftStore's signature, and its test body is
    one the daemon verifies and then ignores (not paid)."""
    import json
    import sys

    from delivery_daemon.marketplaces.softstore import signature

    page = (ROOT / "docs" / "deployment.md").read_text()
    program = re.search(r"SIG=\$\(python3 -c '([^']+)' \"\$API_KEY\" \"\$ORDER\"\)", page)
    assert program is not None
    computed = subprocess.run(
        [sys.executable, "-c", program.group(1), "seller-key", "deploy-test-1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert computed == signature("seller-key", "deploy-test-1")
    body = re.search(r"-d '(\{\"id_order\".*\})'", page)
    assert body is not None
    # What the shell makes of '..."'"$ORDER"'"...': the variable's value inside the JSON string.
    sent = json.loads(body.group(1).replace("'\"$ORDER\"'", "deploy-test-1").replace("'\"$SIG\"'", computed))
    assert sent["payment_status"] != "paid" and sent["id_order"] == "deploy-test-1"
