"""One log stream: ``delivery-daemon serve`` with stdout not a terminal writes every line as one JSON object on
stdout — its own events, uvicorn's, a plugin's stdlib logger and Python warnings alike — with the same keys and the
registered secrets redacted, and nothing on stderr."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from delivery_daemon.reference.softstore import SoftStoreMarketplace
from tests.e2e import test_process as process
from tests.e2e.test_process import API_KEY, WAIT, DaemonProcess, until, write_config

market = process.market  # the reference marketplace fixture, in the test's event loop

KEYS = {"timestamp", "level", "event", "logger"}

NOISY = '''
import logging
import os
import warnings

from pydantic import BaseModel

from delivery_daemon.generators.contract import Generated

warnings.warn("noisy: imported", UserWarning)  # at import, before any order


class NoisyOptions(BaseModel):
    pass


class Noisy:
    """A generator whose library logs through stdlib logging (with a secret in the message) and warns."""

    name = "noisy"
    Options = NoisyOptions

    def __init__(self, options, resources):
        pass

    def generate(self, order):
        logging.getLogger("noisy.client").warning("key server called with %s", os.environ["DD_TEST_API_KEY"])
        warnings.warn("noisy: the key server API is deprecated", RuntimeWarning)
        return Generated(keys=[f"NOISY-{i}" for i in range(order.quantity)])


GENERATORS = [Noisy]
'''


async def test_every_line_is_json_on_stdout(market: SoftStoreMarketplace, tmp_path: Path) -> None:
    """No ``--log-format``: stdout is a pipe, so JSON. A malformed request (uvicorn's warning), a plugin's stdlib
    warning carrying the store's API key, and Python warnings all come out as JSON lines with timestamp, level,
    event and logger; the key is redacted; stderr stays empty."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "noisy.py").write_text(NOISY)
    config = write_config(tmp_path / "c.yaml", market.api_base, db=tmp_path / "d.db", generator="noisy")
    with config.open("a") as extra:
        extra.write(f"plugins: {{directory: '{plugins}'}}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "delivery_daemon",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "DD_TEST_API_KEY": API_KEY},
    )
    daemon = DaemonProcess(proc)
    try:
        started = await daemon.wait_for("daemon.started")
        base = started["webhooks"].removesuffix("/webhooks/<store>")
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        async with asyncio.timeout(WAIT):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400")
        invalid = await daemon.wait_for("Invalid HTTP request received.")
        assert invalid["logger"] == "uvicorn.error" and invalid["level"] == "warning"

        market.seller_url = f"{base}/webhooks/shop"
        order = await market.place_order("prod-1", 1)
        await until(lambda: market.accepted(order.id_order) is not None)
        await daemon.wait_for("key server called with [redacted]")
    finally:
        assert await daemon.stop() == 0
    assert proc.stderr is not None
    assert await proc.stderr.read() == b""  # no plain-text line, no traceback

    lines = [line for line in daemon.raw if line]
    assert len(lines) == len(daemon.events) > 5
    for event in daemon.events:
        assert event.keys() >= KEYS, event
        assert event["level"] in {"debug", "info", "warning", "error", "critical"}, event
    assert API_KEY not in "\n".join(lines)
    [client] = [e for e in daemon.events if e["logger"] == "noisy.client"]
    assert client["level"] == "warning"
    warned = [e["event"] for e in daemon.events if e["logger"] == "py.warnings"]
    assert any("UserWarning: noisy: imported" in w for w in warned), warned
    assert any("RuntimeWarning: noisy: the key server API is deprecated" in w for w in warned), warned
    assert json.loads(lines[-1])["event"] == "daemon.stopped"
