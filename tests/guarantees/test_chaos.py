"""The chaos run (short CI version) and the verdict it is judged by."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from delivery_daemon.cli import main
from delivery_daemon.reference.chaos.harness import ChaosOptions
from delivery_daemon.reference.chaos.run import run_chaos
from delivery_daemon.reference.chaos.verdict import judge
from delivery_daemon.reference.records import DeliveryRecord
from delivery_daemon.reference.softstore import SoftStoreMarketplace


@pytest.mark.timeout(240)
async def test_short_chaos_run_keeps_every_promise(tmp_path: Path) -> None:
    """300 orders, 2 SIGKILLs, 5xx/drops/delays/JWT expiry/outage, resent webhooks and webhooks never sent: each
    paid order delivered once, or raised as missed when its webhook never came."""
    lines: list[str] = []
    verdict = await run_chaos(ChaosOptions(orders=300, kills=2, rate=80, workdir=tmp_path), say=lines.append)
    assert verdict.violations == [], "\n".join(lines)
    assert verdict.kills == 2 and verdict.faults > 30 and verdict.resent > 0
    assert verdict.delivered == verdict.orders - verdict.unpaid - verdict.never_sent > 250
    assert verdict.raised == verdict.never_sent  # every order whose webhook never came is raised as missed
    assert verdict.integrity == "ok" and verdict.unfinished == 0 and verdict.leaks == 0
    assert lines[-1].startswith("chaos: orders=300 unpaid=") and "duplicates=0 lost=0 mismatched=0" in lines[-1]


def _market_with(tmp_path: Path) -> tuple[SoftStoreMarketplace, Path, Path]:
    market = SoftStoreMarketplace(api_key="k" * 20)
    market.bind("http://127.0.0.1:1")
    market.add_product("p")
    database = tmp_path / "db.sqlite"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE jobs (state TEXT)")
        conn.executemany("INSERT INTO jobs VALUES (?)", [("delivered",), ("queued",)])
    conn.close()
    log = tmp_path / "daemon.log"
    log.write_text("")
    return market, database, log


def _deliver(market: SoftStoreMarketplace, id_order: str, text: str, status: int) -> None:
    market.delivery_log.append(
        DeliveryRecord(id_order=id_order, token="t", body=b"", json={"text": text}, status=status, at=0.0)
    )


async def test_verdict_names_each_broken_promise(tmp_path: Path) -> None:
    """Lost, duplicated, changed-content and shared-key orders, a queued job and a leaked token are all reported."""
    market, database, log = _market_with(tmp_path)
    ids = [(await market.place_order("p", 1, send_webhook=False)).id_order for _ in range(4)]
    _deliver(market, ids[0], "Order a\nKEY-1", 500)
    _deliver(market, ids[0], "Order a\nKEY-2", 200)  # content changed between attempts
    _deliver(market, ids[1], "Order b\nKEY-3", 200)
    _deliver(market, ids[1], "Order b\nKEY-3", 200)  # accepted twice
    _deliver(market, ids[2], "Order c\nKEY-3", 200)  # a key already given to order b
    log.write_text(f"some line with {market.orders[ids[2]].token}\n")  # ids[3] is never delivered
    verdict = judge(market, paid=ids, unpaid=[], database=database, log=log, kills=0, resent=0)
    assert (verdict.lost, verdict.duplicates, verdict.mismatched, verdict.reused_keys) == (1, 1, 1, 1)
    assert verdict.unfinished == 1 and verdict.leaks == 1 and not verdict.ok
    assert verdict.line().endswith("-> VIOLATED")


def test_chaos_command_is_registered(capsys: pytest.CaptureFixture[str]) -> None:
    """``delivery-daemon chaos --help`` documents the full-run knobs."""
    with pytest.raises(SystemExit) as exited:
        main(["chaos", "--help"])
    assert exited.value.code == 0
    assert "--orders" in capsys.readouterr().out
