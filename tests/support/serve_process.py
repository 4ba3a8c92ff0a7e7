"""``delivery-daemon serve`` run once as a real process, for tests of what start-up accepts and refuses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


def serve_once(
    config: Path, *, expect_start: bool, env: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    """``delivery-daemon serve --log-format json`` as a process (``env``: its whole environment, else ours), stopped
    with SIGTERM once it logged ``daemon.started``; returns (exit status, log events, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "delivery_daemon", "serve", "--config", str(config), "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    events: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        if expect_start:
            for line in proc.stdout:
                events.append(json.loads(line))
                if events[-1]["event"] == "daemon.started":
                    proc.send_signal(signal.SIGTERM)
                    break
        out, err = proc.communicate(timeout=60)
        events += [json.loads(line) for line in out.splitlines() if line.strip()]
        return proc.returncode, events, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
