"""Every configuration error says what to type: ``<key.path>: <what is wrong>; expected <form>, e.g. <example>``.

Each bad value runs through ``delivery-daemon check-config`` (the CLI's ``main``; the outbound-webhook secret also as
a real process) and must exit 2 with one line naming the key path, the expected form and an example, no traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery_daemon.cli import main

LINE = re.compile(
    r"delivery-daemon: error: (?P<path>\S+): (?P<problem>.+?); expected (?P<form>.+), e\.g\. (?P<example>.+)"
)

WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def base() -> dict[str, Any]:
    """A configuration check-config accepts (no network: the only URL is on loopback, which is allowed)."""
    return {
        "database": {"url": "sqlite:///unused.db"},
        "security": {"allowed_networks": ["127.0.0.0/8"]},
        "stores": [
            {
                "name": "main",
                "marketplace": "standard-webhooks",
                "webhook_secret": WHSEC,
                "delivery": {"channel": "webhook", "webhook": {"url": "http://127.0.0.1:9/hook", "secret": WHSEC}},
                "default": {"generator": "pattern"},
            }
        ],
    }


def softstore() -> dict[str, Any]:
    """A SoftStore store (its adapter wants api_url and api_key)."""
    return {
        "name": "soft",
        "marketplace": "softstore",
        "api_url": "http://127.0.0.1:9/api/v1",
        "api_key": "k" * 20,
        "default": {"generator": "pattern"},
    }


def edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = base()
    change(document)
    return document


def store0(document: dict[str, Any]) -> dict[str, Any]:
    stores: list[dict[str, Any]] = document["stores"]
    return stores[0]


@dataclass(frozen=True)
class Case:
    document: dict[str, Any] | str
    path: str
    form: str
    example: str
    env: tuple[tuple[str, str], ...] = ()


def _set(keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """An edit that sets the dotted ``keys`` (``stores`` means the first store) to ``value``."""

    def change(document: dict[str, Any]) -> None:
        *parents, last = keys.split(".")
        node: Any = document
        for key in parents:
            node = store0(document) if key == "stores" else node.setdefault(key, {})
        node[last] = value

    return change


def _drop(keys: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = keys.split(".")
        node: Any = document
        for key in parents:
            node = store0(document) if key == "stores" else node[key]
        del node[last]

    return change


def _stores(*stores: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["stores"] = list(stores)

    return change


CASES: dict[str, Case] = {
    # missing keys
    "missing marketplace": Case(
        edit(_drop("stores.marketplace")), "stores[0].marketplace", "standard-webhooks", "softstore"
    ),
    "missing webhook secret": Case(
        edit(_drop("stores.delivery.webhook.secret")), "stores[0].delivery.webhook.secret", "whsec_", "whsec_"
    ),
    "missing softstore api_key": Case(
        edit(_stores({**softstore(), "api_key": None})), "stores[0].api_key", "secret", "${"
    ),
    "missing email settings": Case(
        edit(_set("stores.delivery", {"channel": "email"})), "stores[0].delivery.email", "mapping", "sender: "
    ),
    "missing plugin option": Case(
        edit(_set("stores.default", {"generator": "command"})), "stores[0].default.options.argv", "list", "["
    ),
    # wrong types
    "port is text": Case(edit(_set("server.port", "eighty")), "server.port", "whole number from 0 to 65535", "8080"),
    "jitter is not a bool": Case(edit(_set("delivery.jitter", "maybe")), "delivery.jitter", "true or false", "true"),
    "server is a number": Case(edit(_set("server", 8080)), "server", "mapping", "port: 8080"),
    "stores is a mapping": Case(edit(_set("stores", {"name": "x"})), "stores", "list", "marketplace: softstore"),
    "plugin option wrong type": Case(
        edit(_set("stores.default", {"generator": "command", "options": {"argv": ["true"], "timeout": "soon"}})),
        "stores[0].default.options.timeout",
        "number",
        "10",
    ),
    # bad enum / literal
    "log level": Case(
        edit(_set("logging.level", "verbose")), "logging.level", "one of debug, info, warning, error", "info"
    ),
    "channel": Case(
        edit(_set("stores.delivery.channel", "sms")),
        "stores[0].delivery.channel",
        "one of marketplace, email, webhook",
        "marketplace",
    ),
    "unknown marketplace": Case(
        edit(_set("stores.marketplace", "etsy")), "stores[0].marketplace", "softstore", "softstore"
    ),
    "unknown generator": Case(
        edit(_set("stores.default.generator", "magic")), "stores[0].default.generator", "pattern", "pattern"
    ),
    # bad URLs
    "api_url not http": Case(
        edit(_stores({**softstore(), "api_url": "ftp://x"})), "stores[0].api_url", "http(s) URL", "https://"
    ),
    "webhook url": Case(
        edit(_set("stores.delivery.webhook.url", "localhost:80")),
        "stores[0].delivery.webhook.url",
        "http(s) URL",
        "https://",
    ),
    "database url": Case(
        edit(_set("database.url", "not a url")), "database.url", "database URL", "sqlite:///delivery-daemon.db"
    ),
    "http generator url": Case(
        edit(_set("stores.default", {"generator": "http", "options": {"url": "gopher://x"}})),
        "stores[0].default.options.url",
        "http(s) URL",
        "http",
    ),
    "refused destination": Case(
        edit(_set("security.allowed_networks", [])),
        "stores[0].delivery.webhook.url",
        "allowed_networks",
        "allowed_networks: [127.0.0.1/32]",
    ),
    # bad secret formats
    "outbound whsec not base64": Case(
        edit(_set("stores.delivery.webhook.secret", "not-a-secret!!")),
        "stores[0].delivery.webhook.secret",
        "whsec_ followed by",
        "whsec_",
    ),
    "outbound whsec too short": Case(
        edit(_set("stores.delivery.webhook.secret", "whsec_abc")),
        "stores[0].delivery.webhook.secret",
        "16 bytes",
        "whsec_",
    ),
    "inbound whsec": Case(edit(_set("stores.webhook_secret", "nope")), "stores[0].webhook_secret", "whsec_", "whsec_"),
    # unknown keys
    "unknown nested key": Case(edit(_set("server.prot", 1)), "server.prot", "one of host, port", "port"),
    "unknown top-level key": Case(edit(_set("workers", {})), "workers", "worker", "worker"),
    "unknown plugin option": Case(
        edit(_set("stores.default.options", {"patern": "XXXXXXXX"})),
        "stores[0].default.options.patern",
        "pattern",
        "pattern",
    ),
    # bad durations and numbers
    "lease zero": Case(edit(_set("worker.lease_seconds", 0)), "worker.lease_seconds", "greater than 0", "120"),
    "timeout with unit": Case(edit(_set("delivery.timeout", "15s")), "delivery.timeout", "number", "15"),
    "port too large": Case(edit(_set("server.port", 70000)), "server.port", "from 0 to 65535", "8080"),
    "concurrency zero": Case(edit(_set("worker.concurrency", 0)), "worker.concurrency", "from 1 to 1024", "32"),
    "negative retry delay": Case(
        edit(_set("delivery.retry_schedule", [5, -1])), "delivery.retry_schedule", "zero or more", "[5, 300"
    ),
    "pattern too guessable": Case(
        edit(_set("stores.default.options", {"pattern": "XX-XX"})),
        "stores[0].default.options.pattern",
        "8",
        "XXXXX-XXXXX",
    ),
    # formats checked by validators
    "store name": Case(edit(_set("stores.name", "my shop")), "stores[0].name", "letters, digits", "main"),
    "duplicate store": Case(
        edit(_stores(base()["stores"][0], base()["stores"][0])), "stores[1].name", "not used by another store", "main-2"
    ),
    "sender": Case(
        edit(_set("stores.delivery", {"channel": "email", "email": {"host": "127.0.0.1", "sender": "nobody"}})),
        "stores[0].delivery.email.sender",
        "email address",
        "@",
    ),
    "cidr": Case(
        edit(_set("security.allowed_networks", ["10.0.0.300/8"])), "security.allowed_networks", "CIDR", "127.0.0.0/8"
    ),
    "template field": Case(
        edit(_set("stores.default.template", "{key}")), "stores[0].default.template", "{keys_lines}", "{keys_lines}"
    ),
    "status without password": Case(
        edit(lambda d: d.update(status={"enabled": True}, admin={"port": 9100})), "status.password", "password", "${"
    ),
    "status without admin port": Case(
        edit(lambda d: d.update(status={"enabled": True, "password": "pw"})), "admin.port", "port", "9100"
    ),
    "status.host no longer exists": Case(edit(_set("status.host", "0.0.0.0")), "status.host", "admin.host", "admin"),
    # bad env interpolation
    "env var not set": Case(
        edit(_set("stores.webhook_secret", "${DD_TEST_UNSET_SECRET}")),
        "stores[0].webhook_secret",
        "DD_TEST_UNSET_SECRET",
        "DD_TEST_UNSET_SECRET=",
    ),
    "env reference malformed": Case(
        edit(_set("stores.webhook_secret", "${DD_TEST_SECRET")), "stores[0].webhook_secret", "${NAME}", "${"
    ),
    "env value wrong": Case(
        edit(_set("server.port", "${DD_TEST_PORT}")),
        "server.port",
        "whole number",
        "8080",
        env=(("DD_TEST_PORT", "http"),),
    ),
}


def write(tmp_path: Path, document: dict[str, Any] | str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def test_base_configuration_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The table's starting point passes check-config, so each case fails for its own edit alone."""
    assert main(["check-config", "--config", str(write(tmp_path, base()))]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("name", list(CASES))
def test_config_error_says_what_to_type(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check-config exits 2 with one line: the key path, what is wrong, the expected form and an example."""
    case = CASES[name]
    monkeypatch.delenv("DD_TEST_UNSET_SECRET", raising=False)
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    status = main(["check-config", "--config", str(write(tmp_path, case.document))])
    captured = capsys.readouterr()
    assert status == 2, captured
    assert captured.out == ""
    assert "Traceback" not in captured.err
    line = captured.err.rstrip("\n")
    assert "\n" not in line, line
    match = LINE.fullmatch(line)
    assert match is not None, line
    assert match["path"] == case.path, line
    assert case.form in match["form"], line
    assert case.example in match["example"], line
    assert match["problem"].strip(), line


def test_secret_values_are_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong secret, or a wrong value from ``${...}``, is described, never repeated in the error line."""
    document = edit(_set("stores.delivery.webhook.secret", "whsec_SuperSecretButWrong!!"))
    assert main(["check-config", "--config", str(write(tmp_path, document))]) == 2
    assert "SuperSecret" not in capsys.readouterr().err
    monkeypatch.setenv("DD_TEST_PORT", "hunter2")
    assert main(["check-config", "--config", str(write(tmp_path, edit(_set("server.port", "${DD_TEST_PORT}"))))]) == 2
    err = capsys.readouterr().err
    assert "hunter2" not in err and "server.port: got text (from ${DD_TEST_PORT}); expected a whole number" in err
    assert main(["check-config", "--config", str(write(tmp_path, edit(_set("server.port", "hunter2"))))]) == 2
    assert "got text 'hunter2'" in capsys.readouterr().err  # typed in the file itself, it is shown


def test_outbound_whsec_error_from_a_real_process(tmp_path: Path) -> None:
    """As a process: a bad delivery.webhook secret exits 2 naming the key, the whsec_ form and an example."""
    path = write(tmp_path, edit(_set("stores.delivery.webhook.secret", "not-a-secret!!")))
    done = subprocess.run(
        [sys.executable, "-m", "delivery_daemon.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    match = LINE.fullmatch(done.stderr.rstrip("\n"))
    assert match is not None, done.stderr
    assert match["path"] == "stores[0].delivery.webhook.secret"
    assert "whsec_ followed by" in match["form"] and match["example"].startswith("whsec_")
