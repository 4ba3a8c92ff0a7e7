"""``delivery-daemon demo --marketplace NAME`` and ``--all``: each marketplace's reference side, the daemon and the
buyer's side (the seller's endpoint, the SMTP sink, Sellix's dynamic answer) on loopback, exit 0 only if every order
reached the buyer exactly once."""

from __future__ import annotations

import io
import re
import sys
import time

import pytest

from delivery_daemon.cli import main
from delivery_daemon.reference import demo_all
from delivery_daemon.reference.demo import Row, report
from delivery_daemon.reference.demo_webhooks import Buyer
from delivery_daemon.reference.standard_webhooks import Received, SellerSystem

ORDERS = 3
CHANNELS = {
    "softstore": None,
    "sellix": ["webhook", "webhook", "answer"],
    "shoppy": ["webhook"] * ORDERS,
    "stripe": ["webhook"] * ORDERS,
    "stripe-checkout": ["webhook"] * ORDERS,
    "standard-webhooks": ["email"] * ORDERS,
    "lemonsqueezy": ["email"] * ORDERS,
    "polar": ["email"] * ORDERS,
    "paddle": ["email"] * ORDERS,
    "virtual-stores": ["email"] * ORDERS,
    "gumroad": ["email"] * ORDERS,
    "sellauth": ["answer"] * ORDERS,
}


def table_rows(output: str) -> list[list[str]]:
    """The cells of the result table's rows (between the dashes under its header and the verdict line)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"[- ]+", line)) + 1
    end = next(i for i in range(start, len(lines)) if "exactly once" in lines[i])
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:end]]


@pytest.mark.parametrize("marketplace", list(CHANNELS))
def test_demo_of_each_marketplace_delivers_every_order_once(
    marketplace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --marketplace NAME` exits 0 and its table names each order once, delivered once through its channel."""
    assert main(["demo", "--marketplace", marketplace, "--orders", str(ORDERS)]) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert len(rows) == ORDERS and all(row[-1] == "delivered once" for row in rows), output
    for row in rows:
        assert output.count(row[0]) == 1, output
    if CHANNELS[marketplace] is not None:
        assert [row[3] for row in rows] == CHANNELS[marketplace], output
    assert f"all {ORDERS} orders delivered exactly once" in output


def test_email_variant_delivers_by_webhook_without_aiosmtpd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without aiosmtpd (a test dependency only) the Standard Webhooks demo says so and delivers by webhook."""
    monkeypatch.setitem(sys.modules, "aiosmtpd.smtp", None)  # the import raises ImportError
    assert main(["demo", "--marketplace", "standard-webhooks", "--orders", "2"]) == 0
    output = capsys.readouterr().out
    assert "aiosmtpd is not installed" in output
    assert [row[3] for row in table_rows(output)] == ["webhook", "webhook"]


def test_a_second_delivery_of_an_order_fails_the_demo() -> None:
    """The buyer's side seeing one order twice (the channel and a dynamic answer) makes the verdict 1, not 0."""
    seller = SellerSystem("whsec_unused")
    body = {"type": "order.delivered", "data": {"order_id": "sellix-1", "keys": ["K-1"]}}
    seller.received.append(Received("msg_1", body, 200))
    buyer = Buyer(seller, None)
    rows = [Row("sellix-1", "win11-pro", 1, time.time(), channel="answer")]
    buyer.refresh(rows[0])
    stream = io.StringIO()
    assert report(rows, stream) == 0  # once: delivered
    buyer.answers.append(buyer.deliveries("sellix-1")[0])
    buyer.refresh(rows[0])
    assert report(rows, stream) == 1 and "accepted 2x" in stream.getvalue()


def test_virtual_stores_demo_fulfils_each_shop_order_and_leaves_the_mug(capsys: pytest.CaptureFixture[str]) -> None:
    """Each cart's mail holds both digital products' keys (not the mug's), and its shop order ends fulfilled once."""
    assert main(["demo", "--marketplace", "virtual-stores", "--orders", str(ORDERS)]) == 0
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert [(row[2], row[4], row[5]) for row in rows] == [("2", "2", "fulfilled"), ("3", "3", "fulfilled")] + [
        ("2", "2", "fulfilled")
    ] * (ORDERS - 2), output
    assert all("mug" not in row[1] for row in rows)
    assert f"the shop's orders: {ORDERS} fulfilled" in output and "1 fulfil call(s) answered 5xx" in output


def test_a_shop_order_not_fulfilled_once_fails_the_demo() -> None:
    """An order delivered once whose shop order was never, or twice, marked fulfilled makes the verdict 1."""
    for times, shown in ((0, "not fulfilled"), (2, "fulfilled 2x")):
        row = Row("VS-1", "win11-pro x1", 1, time.time(), keys=1, accepted=1, channel="email", fulfilled=times)
        stream = io.StringIO()
        assert report([row], stream) == 1 and shown in stream.getvalue()
        row.fulfilled = 1
        assert report([row], io.StringIO()) == 0


def test_virtual_stores_demo_delivers_by_webhook_without_aiosmtpd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without aiosmtpd the Virtual Stores demo says so, delivers each cart by webhook and still fulfils it once."""
    monkeypatch.setitem(sys.modules, "aiosmtpd.smtp", None)  # the import raises ImportError
    assert main(["demo", "--marketplace", "virtual-stores", "--orders", "2"]) == 0
    output = capsys.readouterr().out
    assert "aiosmtpd is not installed" in output
    rows = [(row[3], row[4], row[5]) for row in table_rows(output)]
    assert rows == [("webhook", "2", "fulfilled"), ("webhook", "3", "fulfilled")], output


def test_all_runs_every_marketplace_and_fails_if_one_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --all` runs every demo in turn with the given orders; it exits 1 naming the one that failed."""
    ran: list[tuple[str, int]] = []
    failing = {"shoppy"}

    async def fake(marketplace: str, orders: int = 6, stream: object = None) -> int:
        ran.append((marketplace, orders))
        return 1 if marketplace in failing else 0

    monkeypatch.setattr(demo_all, "run_marketplace_demo", fake)
    assert main(["demo", "--all", "--orders", "2"]) == 1
    assert ran == [(name, 2) for name in demo_all.MARKETPLACES]
    assert f"1 of {len(demo_all.MARKETPLACES)} demos failed: shoppy" in capsys.readouterr().out
    failing.clear()
    assert main(["demo", "--all"]) == 0 and len(ran) == 2 * len(demo_all.MARKETPLACES)


def test_marketplace_and_all_are_exclusive_and_names_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    """--marketplace and --all together, or an unknown marketplace, are usage errors (exit 2)."""
    for argv in (["demo", "--all", "--marketplace", "sellix"], ["demo", "--marketplace", "nope"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
