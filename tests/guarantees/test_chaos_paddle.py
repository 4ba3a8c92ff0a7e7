"""The chaos run for Paddle Billing: SIGKILLs, a failing seller endpoint, resent and forged Paddle-signed webhooks,
with the reference Paddle API served for the adapter's trust-but-verify read."""

from __future__ import annotations

from pathlib import Path

import pytest

from delivery_daemon.reference.chaos.harness import ChaosOptions
from delivery_daemon.reference.chaos.run import run_chaos


@pytest.mark.timeout(180)
async def test_short_chaos_run_for_paddle(tmp_path: Path) -> None:
    """100 orders, 2 SIGKILLs, a failing seller endpoint, resent and forged events: each paid order delivered once,
    each read back from Paddle's API, nothing forged delivered."""
    lines: list[str] = []
    options = ChaosOptions(orders=100, kills=2, rate=60, unpaid=0.05, workdir=tmp_path, marketplace="paddle")
    verdict = await run_chaos(options, say=lines.append)
    assert verdict.violations == [], "\n".join(lines)
    assert verdict.kills == 2 and verdict.faults > 0 and verdict.resent > 0
    assert verdict.delivered == verdict.orders - verdict.unpaid > 75
    assert verdict.integrity == "ok" and verdict.unfinished == 0 and verdict.leaks == 0
    assert lines[0].startswith("chaos: paddle, seed ")
