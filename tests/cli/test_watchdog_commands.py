"""``delivery-daemon reconcile`` and ``delivery-daemon missed`` against the reference marketplaces over loopback, on
SQLite and PostgreSQL: what a run found and did is printed, queued orders are delivered by the daemon, missed ones are
listed until a job exists for them; a store that cannot list is a usage error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from delivery_daemon.cli import main
from tests.watchdog.stacks import Watched, watched


def config_file(watch: Watched, tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(watch.document))
    return str(path)


async def run(argv: list[str]) -> int:
    """The command in a thread (it runs its own event loop) while the reference marketplaces serve in this one."""
    return await asyncio.to_thread(main, argv)


async def test_reconcile_queues_and_raises_then_missed_lists(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """reconcile prints each listed order's outcome; the Sellix one is then delivered, the SoftStore one is missed."""
    async with watched(db_url) as watch:
        config = config_file(watch, tmp_path)
        watch.soft.faults.never_send_next_webhooks(1)
        soft = await watch.soft.place_order("prod-1")
        watch.sellix.faults.never_send_next_webhooks(1)
        sellix = await watch.sellix.place_order("svc-1", email="erin@example.org")
        capsys.readouterr()
        # No grace by hand: an order placed a moment ago is handled too.
        assert await run(["reconcile", "--config", config, "--store", "sellix", "--since", "7d"]) == 0
        out = capsys.readouterr().out
        assert sellix["uniqid"] in out and "queued" in out and "page(s): queued 1" in out
        assert await watch.drain() == 1 and [m.rcpt_tos for m in watch.mailbox.messages] == [["erin@example.org"]]

        assert await run(["reconcile", "--config", config, "--store", "soft", "--since", "7d", "--json"]) == 0
        [report] = json.loads(capsys.readouterr().out)
        assert report["store"] == "soft" and report["counts"] == {"missed": 1} and report["error"] is None
        assert report["orders"][0]["order_id"] == soft.id_order

        assert await run(["missed", "--config", config, "--json", "--fail-if-any"]) == 1
        [missed] = json.loads(capsys.readouterr().out)
        assert (missed["store"], missed["order_id"]) == ("soft", soft.id_order)
        await watch.soft.send_webhook(soft.id_order)
        assert await run(["missed", "--config", config, "--fail-if-any"]) == 0
        assert soft.id_order not in capsys.readouterr().out


async def test_reconcile_refuses_a_store_that_cannot_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Sellix store without api_key, or an unknown store, is exit 2 with one line, no traceback."""
    async with watched(f"sqlite:///{tmp_path / 'd.db'}") as watch:
        del watch.document["stores"][1]["api_key"]
        config = config_file(watch, tmp_path)
        capsys.readouterr()
        assert await run(["reconcile", "--config", config, "--store", "sellix"]) == 2
        assert "cannot list its orders" in capsys.readouterr().err
        assert await run(["reconcile", "--config", config, "--store", "nope"]) == 2
        err = capsys.readouterr().err
        assert "no store named 'nope'" in err and "Traceback" not in err
