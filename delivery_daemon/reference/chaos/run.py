"""``delivery-daemon chaos``: orders through real processes while everything around the daemon fails.

The daemon runs as a real ``delivery-daemon serve`` subprocess (so it can be SIGKILLed); the reference SoftStore
marketplace runs in this process, on loopback, with random faults (:class:`ChaosFaults`): a share of deliveries is
answered 5xx, dropped or answered late, every JWT is expired every few seconds, and the whole API goes down for a
stretch. The marketplace side behaves like a real one: it resends a webhook until it gets a 2xx, and sends some
webhooks again on purpose (at once, concurrently, and later out of order).

After the drain the verdict is taken from the marketplace's own record (:mod:`delivery_daemon.reference.chaos.verdict`):
every paid order delivered exactly once (a paid order whose webhook was never sent raised as missed by the
watchdog, which ``delivery-daemon reconcile`` runs at the end), identical content on every attempt, no key on two
orders, nothing for unpaid orders, nothing left queued or running, the database whole
(:mod:`delivery_daemon.reference.chaos.database`: SQLite's ``PRAGMA integrity_check``, PostgreSQL's ``amcheck``,
and the same logical checks on both), and no secret in the daemons' logs.

``--database-url postgresql+psycopg://…`` runs the daemon on that (empty) PostgreSQL database instead of a SQLite
file, and ``--replicas N`` runs N daemon processes sharing it, each on its own port: the marketplace spreads its
webhooks over them round-robin (a send that fails goes to the next one, as a load balancer would) and every kill
hits a replica drawn at random.

``--marketplace`` other than ``softstore`` runs :mod:`.webhooks` instead (``paddle``: :mod:`.paddle`, which serves
the reference Paddle API beside it; ``virtual-stores``: :mod:`.virtual_stores`, the shop's staff API failing too, and
its orders checked fulfilled once); what the runs are built from is in :mod:`.harness`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from delivery_daemon.http.serving import serve
from delivery_daemon.reference.chaos.database import describe, wait_settled
from delivery_daemon.reference.chaos.harness import (
    PRODUCT,
    STORE,
    Announcer,
    ChaosFaults,
    ChaosOptions,
    DaemonProcess,
    daemon_config,
    every,
    kill_at_random,
    later,
    outage,
    place_all,
    reconcile,
    report,
    restart_port,
)
from delivery_daemon.reference.chaos.paddle import run_paddle_chaos
from delivery_daemon.reference.chaos.verdict import Verdict, judge
from delivery_daemon.reference.chaos.virtual_stores import run_virtual_stores_chaos
from delivery_daemon.reference.chaos.webhooks import run_webhook_chaos
from delivery_daemon.reference.softstore import SoftStoreMarketplace


@dataclass
class Marketplace(Announcer):
    """The marketplace side: the reference API plus a webhook sender that resends until it gets a 2xx."""

    market: SoftStoreMarketplace
    rng: random.Random
    targets: list[str]  # each replica's webhook URL; sends go round-robin, as through a load balancer
    sends: int = 0
    resent: int = 0
    later: list[str] = field(default_factory=list)

    async def send(self, order_id: str) -> httpx.Response:
        self.sends += 1
        return await self.market.send_webhook(order_id, url=self.targets[self.sends % len(self.targets)])


async def run_chaos(options: ChaosOptions, say: Callable[[str], None] = print) -> Verdict:
    """One chaos run; the verdict lists every violation found (empty when the promises held)."""
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    rng = random.Random(seed)  # noqa: S311 (faults must repeat from the seed, not be secret)
    with contextlib.ExitStack() as stack:
        workdir = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dd-chaos-")))
        workdir.mkdir(parents=True, exist_ok=True)
        if options.marketplace == "softstore":
            return await _run(options, rng, seed, workdir, say)
        say(
            f"chaos: {options.marketplace}, seed {seed}, {options.orders} orders, {options.kills} kills, "
            f"work dir {workdir}"
        )
        started = time.monotonic()
        if options.marketplace == "paddle":
            verdict = await run_paddle_chaos(options, rng, workdir, say)
        elif options.marketplace == "virtual-stores":
            verdict = await run_virtual_stores_chaos(options, rng, workdir, say)
        else:
            verdict = await run_webhook_chaos(options, options.marketplace, rng, workdir, say)
        report(verdict, started, say)
        return verdict


async def _run(
    options: ChaosOptions, rng: random.Random, seed: int, workdir: Path, say: Callable[[str], None]
) -> Verdict:
    started = time.monotonic()
    deadline = started + options.timeout
    database: Path | str = options.database_url or workdir / "chaos.db"
    api_key = secrets.token_hex(20)
    # One pooled transport for every webhook (a fresh client per webhook would build an SSL context each time).
    webhooks = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=64))
    reference = SoftStoreMarketplace(api_key=api_key, webhook_transport=webhooks)
    faults = ChaosFaults(rng, options.fail, options.drop, options.slow)
    reference.faults = faults
    reference.add_product(PRODUCT, count=10**9)
    ports: list[int] = []
    while len(ports) < options.replicas:  # free ports for the daemons, each kept across its restarts
        port = restart_port()
        if port not in ports:
            ports.append(port)
    say(
        f"chaos: seed {seed}, {options.orders} orders, {options.kills} kills, {options.replicas} replica(s) on "
        f"{describe(database)}, work dir {workdir}"
    )
    async with serve(reference.app) as running:
        reference.bind(running.url)
        env = {**os.environ, "CHAOS_API_KEY": api_key}
        daemons = []
        for number, port in enumerate(ports):
            config = workdir / f"daemon-{number}.yaml"
            config.write_text(yaml.safe_dump(daemon_config(workdir, port, reference.api_base, options.database_url)))
            daemons.append(DaemonProcess(config, f"http://127.0.0.1:{port}", workdir / f"daemon-{number}.log", env))
        await asyncio.gather(*(daemon.start() for daemon in daemons))
        side = Marketplace(reference, rng, [f"{daemon.url}/webhooks/{STORE}" for daemon in daemons])
        stop = asyncio.Event()
        window = options.orders / options.rate
        background = [
            asyncio.create_task(every(options.expire_every, faults.expire_tokens, stop)),
            asyncio.create_task(later(rng.uniform(0.2, 0.8) * window, lambda: outage(faults, options.down_for))),
            asyncio.create_task(kill_at_random(daemons, options.kills, window, rng)),
        ]
        paid, unpaid, never_sent = await _place_orders(options, side, rng, deadline)
        placed = len(paid) + len(unpaid) + len(never_sent)
        say(
            f"chaos: {placed} orders placed, all but {len(never_sent)} announced and acknowledged "
            f"at {time.monotonic() - started:.1f} s"
        )
        await side.resend(side.later[::-1])  # the late resends, newest first
        for task in background[1:]:
            await task  # every kill happened, the outage is over
        stop.set()
        await background[0]
        faults.calm()
        say(f"chaos: kills and outage done at {time.monotonic() - started:.1f} s")
        await _wait_delivered(reference, paid, deadline)
        await wait_settled(database, deadline)
        reconciled = await reconcile(daemons[0].config, env, workdir / "reconcile.log")
        await wait_settled(database, deadline)  # nothing to settle unless reconcile queued an order by mistake
        await asyncio.sleep(0.5)  # a late duplicate delivery would land in this window
        exits = await asyncio.gather(*(daemon.stop() for daemon in daemons))
        await webhooks.aclose()
        say(f"chaos: drained and stopped at {time.monotonic() - started:.1f} s")
    verdict = judge(
        reference,
        paid=paid,
        unpaid=unpaid,
        never_sent=never_sent,
        database=database,
        log=[d.log for d in daemons],
        kills=sum(daemon.kills for daemon in daemons),
        resent=side.resent,
    )
    if reconciled != 0:
        verdict.violations.append(f"reconcile exited with {reconciled}; see {workdir / 'reconcile.log'}")
    for number, exit_status in enumerate(exits):
        if exit_status not in (0, -signal.SIGTERM):  # uvicorn re-raises the signal after its graceful shutdown
            verdict.violations.append(f"daemon {number} exited with {exit_status} on SIGTERM")
    report(verdict, started, say)
    return verdict


async def _place_orders(
    options: ChaosOptions, side: Marketplace, rng: random.Random, deadline: float
) -> tuple[list[str], list[str], list[str]]:
    """Place the run's orders: paid ones, unpaid ones with a forged early webhook, and paid ones whose webhook is
    never sent (the marketplace's "webhook never sent" fault: only the watchdog can find them)."""
    paid: list[str] = []
    unpaid: list[str] = []
    never_sent: list[str] = []

    async def place() -> str | None:
        is_unpaid = rng.random() < options.unpaid
        placed = await side.market.place_order(
            PRODUCT, rng.randint(1, 3), status="wait" if is_unpaid else "paid", send_webhook=False
        )
        if not is_unpaid and rng.random() < options.never_sent:
            never_sent.append(placed.id_order)
            return None
        (unpaid if is_unpaid else paid).append(placed.id_order)
        return placed.id_order  # an unpaid order's webhook is sent too ("paid", forged early): never delivered

    await place_all(options, side, rng, deadline, place)
    return paid, unpaid, never_sent


async def _wait_delivered(market: SoftStoreMarketplace, paid: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if all(market.accepted(id_order) is not None for id_order in paid):
            return
        await asyncio.sleep(0.1)
