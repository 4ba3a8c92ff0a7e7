"""``delivery-daemon orders …`` against the daemon's real database, with jobs in every state, while it serves."""

from __future__ import annotations

import json
from typing import Any

import pytest

from delivery_daemon.cli import main
from delivery_daemon.storage.jobs import Transition
from delivery_daemon.storage.models import JobState
from tests.support.stack import PRODUCT, STORE, Stack, accepted_text
from tests.support.status_helpers import dead_order, delivered_order, status_page


def run(stack: Stack, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*argv, "--database", stack.settings.database.url])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(stack: Stack, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(stack, capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


async def place(stack: Stack, product: str = PRODUCT, count: int = 1) -> str:
    placed = await stack.market.place_order(product, count)
    return placed.id_order


async def populate(stack: Stack) -> dict[str, str]:
    """One order in each state the worker produces; returns state → order id."""
    orders: dict[str, str] = {}
    orders["delivered"] = await place(stack, count=2)
    await stack.drain()
    stack.market.faults.fail_next_deliveries(1, status=422)
    orders["dead"] = await place(stack)
    await stack.drain()
    stack.market.faults.fail_next_deliveries(1, status=503)
    orders["retry_wait"] = await place(stack, product="prod-2")
    await stack.drain()
    queue = stack.daemon.queue
    orders["waiting"] = await place(stack)
    [job] = await queue.claim("test-worker", 30, 10)
    await queue.transition(
        job, "test-worker", Transition(JobState.WAITING, "generate", "out_of_stock", error="no keys left")
    )
    stack.clock.advance(1)
    orders["running"] = await place(stack)
    await queue.claim("other-worker", 30, 10)
    stack.clock.advance(1)
    orders["queued"] = await place(stack)
    for state, order_id in orders.items():
        assert (await stack.job(order_id)).state == state
    return orders


async def test_list_newest_first_and_filters(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`orders list --json` returns all orders newest first; --state/--product/--store/--since narrow it."""
    orders = await populate(stack)
    listed = run_json(stack, capsys, "orders", "list")
    assert {row["state"] for row in listed} == set(orders)
    assert listed[0]["order_id"] == orders["queued"]
    assert [row["order_id"] for row in run_json(stack, capsys, "orders", "list", "--state", "dead")] == [orders["dead"]]
    assert [row["order_id"] for row in run_json(stack, capsys, "orders", "list", "--product", "prod-2")] == [
        orders["retry_wait"]
    ]
    assert run_json(stack, capsys, "orders", "list", "--store", "elsewhere") == []
    assert run_json(stack, capsys, "orders", "list", "--since", "2099-01-01") == []
    assert all("payload" not in row and "content" not in row for row in listed)
    code, out, _ = run(stack, capsys, "orders", "list", "--state", "cancelled")
    assert code == 0 and "no orders match" in out
    code, out, _ = run(stack, capsys, "orders", "list")
    assert code == 0 and "retry_wait" in out
    assert all(f"  {order_id}  " in out for order_id in orders.values())  # whole ids, in a plain-text table
    assert out.splitlines()[1].split()[:3] == ["job", "store", "order"]


async def test_show_hides_content_unless_revealed(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`orders show` lists every attempt with HTTP status; keys appear only with --reveal, the token never."""
    orders = await populate(stack)
    order_id = orders["delivered"]
    delivered_text = accepted_text(stack.market, order_id)
    key = delivered_text.splitlines()[-1]
    token = json.loads((await stack.job(order_id)).payload)["token"]
    code, out, _ = run(stack, capsys, "orders", "show", order_id)
    assert code == 0 and key not in out and token not in out and "--reveal" in out
    shown = run_json(stack, capsys, "orders", "show", order_id)
    assert "content" not in shown
    assert [(a["step"], a["outcome"], a["http_status"]) for a in shown["history"]][-1] == ("deliver", "delivered", 200)
    revealed = run_json(stack, capsys, "orders", "show", order_id, "--reveal")
    assert revealed["content"]["text"] == delivered_text
    code, out, _ = run(stack, capsys, "orders", "show", order_id, "--reveal")
    assert key in out and token not in out
    dead = run_json(stack, capsys, "orders", "show", orders["dead"])
    assert dead["history"][-1]["http_status"] == 422 and dead["last_error"]


async def test_unknown_order_says_so(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """Every per-order command exits 1 with 'no order …' when nothing matches, and changes nothing."""
    await populate(stack)
    for command in ("show", "retry", "redeliver", "cancel"):
        code, _, err = run(stack, capsys, "orders", command, "no-such-order")
        assert code == 1 and "no order 'no-such-order'" in err


async def test_retry_dead_order_delivers_it(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`orders retry` requeues a dead order with a fresh schedule; the worker then delivers it once."""
    orders = await populate(stack)
    code, out, _ = run(stack, capsys, "orders", "retry", orders["dead"])
    assert code == 0 and "queued again" in out
    job = await stack.job(orders["dead"])
    assert (job.state, job.attempts) == ("queued", 0)
    await stack.drain()
    assert (await stack.job(orders["dead"])).state == "delivered"
    assert stack.market.accepted(orders["dead"]) is not None
    code, _, err = run(stack, capsys, "orders", "retry", orders["delivered"])
    assert code == 1 and "redeliver" in err


async def test_retry_all_dead(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`orders retry --all-dead` requeues every dead order, and says so when there is none."""
    orders = await populate(stack)
    code, out, _ = run(stack, capsys, "orders", "retry", "--all-dead")
    assert code == 0 and "queued 1 dead order" in out
    assert (await stack.job(orders["dead"])).state == "queued"
    code, _, err = run(stack, capsys, "orders", "retry", "--all-dead")
    assert code == 1 and "no dead orders" in err


async def test_redeliver_to_softstore_is_answered_already(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`orders redeliver` sends the stored content again; SoftStore answers 409 and the job records 'already'."""
    orders = await populate(stack)
    order_id = orders["delivered"]
    first = accepted_text(stack.market, order_id)
    code, out, _ = run(stack, capsys, "orders", "redeliver", order_id)
    assert code == 0 and "409" in out and "--reveal" in out
    await stack.drain()
    job = await stack.job(order_id)
    assert job.state == "delivered"
    posts = stack.market.deliveries(order_id)
    assert [d.status for d in posts] == [200, 409] and posts[1].json["text"] == first
    last = run_json(stack, capsys, "orders", "show", order_id)["history"][-1]
    assert (last["outcome"], last["http_status"]) == ("already", 409)
    code, _, err = run(stack, capsys, "orders", "redeliver", orders["dead"])
    assert code == 1 and "not delivered" in err


async def test_cancel(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`orders cancel` stops a queued order for good; running and delivered orders are refused."""
    orders = await populate(stack)
    code, _, _ = run(stack, capsys, "orders", "cancel", orders["queued"])
    assert code == 0
    await stack.drain()
    assert (await stack.job(orders["queued"])).state == "cancelled"
    assert stack.market.deliveries(orders["queued"]) == []
    for state in ("running", "delivered", "queued"):
        code, _, err = run(stack, capsys, "orders", "cancel", orders[state])
        assert code == 1 and "cannot be cancelled" in err
    assert (await stack.job(orders["running"])).state == "running"


async def test_config_without_secrets_is_enough(
    stack: Stack, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """--config reads only the database section: unset ${VARS} elsewhere do not stop the operator."""
    await place(stack)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"database:\n  url: {stack.settings.database.url}\nstores:\n  - name: {STORE}\n"
        "    marketplace: softstore\n    api_key: ${DD_TEST_UNSET_SECRET}\n"
    )
    capsys.readouterr()
    assert main(["orders", "list", "--json", "--config", str(config)]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    assert main(["orders", "list", "--database", "sqlite:///" + str(tmp_path / "missing.db")]) == 2
    assert "does not exist" in capsys.readouterr().err


async def test_cli_and_status_page_retry_and_redeliver_alike(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """`orders retry|redeliver` and the status page's buttons make the same transition (operator_requeue)."""
    pairs: dict[str, list[str]] = {"dead": [], "cancelled": [], "delivered": []}
    for _ in range(2):
        pairs["dead"].append(await dead_order(stack))
        pairs["delivered"].append(await delivered_order(stack))
        cancelled = await place(stack)
        assert run(stack, capsys, "orders", "cancel", cancelled)[0] == 0
        pairs["cancelled"].append(cancelled)
    stack.clock.advance(60)

    async def outcome(order_id: str) -> tuple[object, ...]:
        job = await stack.job(order_id)
        last = (await stack.daemon.queue.history(job.id))[-1]
        # Times are left out: the CLI reads the system clock, the stack runs on a manual one.
        return job.state, job.attempts, job.lease_owner, job.last_error, last.step, last.outcome, last.state

    async with status_page(stack) as page:
        await page.login()
        for state, (by_page, by_cli) in pairs.items():
            action = "redeliver" if state == "delivered" else "retry"
            job_id = (await stack.job(by_page)).id
            csrf = await page.csrf(f"/orders/{job_id}")
            assert (
                await page.client.post(f"{page.url}/orders/{job_id}/{action}", data={"csrf_token": csrf})
            ).status_code == 303
            assert run(stack, capsys, "orders", action, by_cli)[0] == 0
            assert await outcome(by_page) == await outcome(by_cli), state
            assert (await outcome(by_page))[:2] == ("queued", 0)  # a fresh retry schedule either way
