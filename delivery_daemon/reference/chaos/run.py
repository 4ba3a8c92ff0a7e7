"""``delivery-daemon chaos``: orders through real processes while everything around the daemon fails.

The daemon runs as a real ``delivery-daemon serve`` subprocess (so it can be SIGKILLed); the reference SoftStore
marketplace runs in this process, on loopback, with random faults (:class:`ChaosFaults`): a share of deliveries is
answered 5xx, dropped or answered late, every JWT is expired every few seconds, and the whole API goes down for a
stretch. The marketplace side behaves like a real one: it resends a webhook until it gets a 2xx, and sends some
webhooks again on purpose (at once, concurrently, and later out of order).

After the drain the verdict is taken from the marketplace's own record (:mod:`delivery_daemon.reference.chaos.verdict`):
every paid order delivered exactly once, identical content on every attempt, no key on two orders, nothing for
unpaid orders, nothing left queued or running, the database whole (:mod:`delivery_daemon.reference.chaos.database`:
SQLite's
``PRAGMA integrity_check``, PostgreSQL's ``amcheck``, and the same logical checks on both), and no secret in the
daemons' logs.

``--database-url postgresql+psycopg://…`` runs the daemon on that (empty) PostgreSQL database instead of a SQLite
file, and ``--replicas N`` runs N daemon processes sharing it, each on its own port: the marketplace spreads its
webhooks over them round-robin (a send that fails goes to the next one, as a load balancer would) and every kill
hits a replica drawn at random.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from delivery_daemon.http.serving import bind_socket, serve
from delivery_daemon.reference.chaos.database import describe, wait_settled
from delivery_daemon.reference.chaos.verdict import Verdict, judge
from delivery_daemon.reference.faults import DeliveryFault, Faults
from delivery_daemon.reference.softstore import SoftStoreMarketplace

PRODUCT = "chaos-product"
STORE = "chaos"


@dataclass(frozen=True)
class ChaosOptions:
    """One run. The defaults are the issue's numbers; ``orders``/``kills`` size it (CI: ~300/2, full: 2000/5+)."""

    orders: int = 300
    kills: int = 2
    seed: int | None = None
    rate: float = 60.0  # orders placed per second
    fail: float = 0.20  # deliveries answered 5xx
    drop: float = 0.05  # deliveries whose connection is closed with no answer
    slow: float = 0.05  # deliveries answered late (some past the daemon's timeout)
    resend: float = 0.10  # webhooks sent again
    unpaid: float = 0.02  # orders whose (forged-early) webhook arrives before payment: must never be delivered
    expire_every: float = 3.0  # seconds between JWT expiries
    down_for: float = 2.0  # seconds the marketplace API answers 503 to everything, once
    timeout: float = 300.0  # for the whole run
    workdir: Path | None = None
    database_url: str | None = None  # None: a SQLite file in the work dir
    replicas: int = 1  # daemon processes sharing the database (more than 1 needs PostgreSQL)
    marketplace: str = "softstore"  # or a webhook-only one: see delivery_daemon.reference.chaos.webhooks.FLAVOURS


class ChaosFaults(Faults):
    """The reference marketplace's faults, drawn at random per delivery instead of armed one by one."""

    def __init__(self, rng: random.Random, fail: float, drop: float, slow: float) -> None:
        super().__init__()
        self.rng = rng
        self.rates = (fail, drop, slow)

    def calm(self) -> None:
        """No more random faults (armed ones and ``down`` are cleared too)."""
        self.rates = (0.0, 0.0, 0.0)
        self.clear()

    def take_delivery_fault(self) -> DeliveryFault | None:
        armed = super().take_delivery_fault()
        if armed is not None:
            return armed
        fail, drop, slow = self.rates
        draw = self.rng.random()
        if draw < fail:
            fault = DeliveryFault("fail", status=self.rng.choice((500, 502, 503, 504)))
        elif draw < fail + drop:
            fault = DeliveryFault("drop")
        elif draw < fail + drop + slow:
            fault = DeliveryFault("slow", seconds=self.rng.uniform(0.2, 1.6))
        else:
            return None
        with self._lock:
            self.injected[f"delivery_{fault.kind}"] += 1
        return fault


class DaemonProcess:
    """``delivery-daemon serve`` as a child process that can be killed and started again on the same port."""

    def __init__(self, config: Path, url: str, log: Path, env: dict[str, str]) -> None:
        self.config, self.url, self.log, self.env = config, url, log, env
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(  # noqa: S603  (our own interpreter and module, fixed arguments)
                [sys.executable, "-m", "delivery_daemon", "serve", "--config", str(self.config),
                 "--log-format", "json"], stdout=out, stderr=subprocess.STDOUT, env=self.env)

    async def start(self, within: float = 60.0) -> None:
        """Start the daemon and return once ``/readyz`` answers 200."""
        self.process = await asyncio.to_thread(self._spawn)
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {self.process.returncode}; see {self.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"the daemon was not ready within {within:g} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, leases stay held, in-flight requests are cut."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    async def stop(self) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, 60)


class Announcer:
    """What every marketplace does with an order's webhook: send it until the daemon answers 2xx, and send some
    again. Subclasses say how one webhook is sent (:meth:`send`) and keep ``resent`` and ``later``."""

    resent: int
    later: list[str]  # orders to send again once all are placed

    async def send(self, order_id: str) -> httpx.Response:
        raise NotImplementedError

    async def announce(self, order_id: str, deadline: float) -> None:
        """Send the order's webhook until the daemon acknowledges it (what every real marketplace does)."""
        delay = 0.05
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await self.send(order_id)).status_code < 300:
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise TimeoutError(f"webhook for {order_id} never acknowledged")

    async def resend(self, order_ids: list[str]) -> None:
        """Send these webhooks again, all at once (so concurrently and in no particular order)."""
        self.resent += len(order_ids)

        async def once(order_id: str) -> None:
            with contextlib.suppress(httpx.HTTPError):
                await self.send(order_id)

        await asyncio.gather(*(once(i) for i in order_ids))


async def place_all(options: ChaosOptions, side: Announcer, rng: random.Random, deadline: float,
                    place: Callable[[], Awaitable[str | None]]) -> None:
    """Place ``options.orders`` orders at ``options.rate`` a second through ``place`` (which returns the order to
    announce, or None), announce each concurrently, and resend a share now (twice at once) or later."""
    senders: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(64)

    async def announce(order_id: str, again: str | None) -> None:
        async with gate:
            await side.announce(order_id, deadline)
        if again == "now":
            await side.resend([order_id, order_id])
        elif again == "later":
            side.later.append(order_id)

    for _ in range(options.orders):
        order_id = await place()
        if order_id is not None:
            again = rng.choice(("now", "later")) if rng.random() < options.resend else None
            senders.append(asyncio.create_task(announce(order_id, again)))
        await asyncio.sleep(1 / options.rate)
    await asyncio.gather(*senders)


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


def daemon_config(workdir: Path, port: int, api_base: str, database_url: str | None = None) -> dict[str, Any]:
    """The daemon's configuration for a run: short retries (but many), a short lease, a tight delivery timeout.
    The database is ``database_url``, else ``chaos.db`` in ``workdir``."""
    return {
        "database": {"url": database_url or f"sqlite:///{workdir / 'chaos.db'}"},
        "server": {"host": "127.0.0.1", "port": port},
        "worker": {"poll_interval": 0.2, "lease_seconds": 3.0, "concurrency": 16},
        "delivery": {"timeout": 1.0, "jitter": True, "retry_schedule": [0.05, 0.1, 0.2, 0.5] + [1.0] * 200},
        "logging": {"format": "json", "level": "info"},
        "stores": [{
            "name": STORE, "marketplace": "softstore", "api_url": api_base, "api_key": "${CHAOS_API_KEY}",
            "default": {"generator": "pattern", "options": {"pattern": "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"},
                        "template": "Order {order_id}\n{keys_lines}"},
        }],
    }


async def every(seconds: float, action: Callable[[], None], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if not stop.is_set():
            action()


async def later(seconds: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(seconds)
    await action()


async def run_chaos(options: ChaosOptions, say: Callable[[str], None] = print) -> Verdict:
    """One chaos run; the verdict lists every violation found (empty when the promises held)."""
    seed = options.seed if options.seed is not None else secrets.randbelow(2**31)
    rng = random.Random(seed)
    with contextlib.ExitStack() as stack:
        workdir = options.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dd-chaos-")))
        workdir.mkdir(parents=True, exist_ok=True)
        if options.marketplace == "softstore":
            return await _run(options, rng, seed, workdir, say)
        from delivery_daemon.reference.chaos.webhooks import run_webhook_chaos

        say(f"chaos: {options.marketplace}, seed {seed}, {options.orders} orders, {options.kills} kills, "
            f"work dir {workdir}")
        started = time.monotonic()
        verdict = await run_webhook_chaos(options, options.marketplace, rng, workdir, say)
        report(verdict, started, say)
        return verdict


async def _run(options: ChaosOptions, rng: random.Random, seed: int, workdir: Path,
               say: Callable[[str], None]) -> Verdict:
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
    ports = []
    for _ in range(options.replicas):  # free ports for the daemons, each kept across its restarts
        with bind_socket() as probe:
            ports.append(probe.getsockname()[1])
    say(f"chaos: seed {seed}, {options.orders} orders, {options.kills} kills, {options.replicas} replica(s) on "
        f"{describe(database)}, work dir {workdir}")
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
        paid, unpaid = await _place_orders(options, side, rng, deadline)
        say(f"chaos: {len(paid) + len(unpaid)} orders placed and acknowledged at {time.monotonic() - started:.1f} s")
        await side.resend(side.later[::-1])  # the late resends, newest first
        for task in background[1:]:
            await task  # every kill happened, the outage is over
        stop.set()
        await background[0]
        faults.calm()
        say(f"chaos: kills and outage done at {time.monotonic() - started:.1f} s")
        await _wait_delivered(reference, paid, deadline)
        await wait_settled(database, deadline)
        await asyncio.sleep(0.5)  # a late duplicate delivery would land in this window
        exits = await asyncio.gather(*(daemon.stop() for daemon in daemons))
        await webhooks.aclose()
        say(f"chaos: drained and stopped at {time.monotonic() - started:.1f} s")
    verdict = judge(reference, paid=paid, unpaid=unpaid, database=database, log=[d.log for d in daemons],
                    kills=sum(daemon.kills for daemon in daemons), resent=side.resent)
    for number, exit_status in enumerate(exits):
        if exit_status not in (0, -signal.SIGTERM):  # uvicorn re-raises the signal after its graceful shutdown
            verdict.violations.append(f"daemon {number} exited with {exit_status} on SIGTERM")
    report(verdict, started, say)
    return verdict


def report(verdict: Verdict, started: float, say: Callable[[str], None]) -> None:
    """The summary line, then the first violations."""
    say(verdict.line() + f" ({time.monotonic() - started:.1f} s)")
    for violation in verdict.violations[:20]:
        say(f"  violation: {violation}")


async def _place_orders(options: ChaosOptions, side: Marketplace, rng: random.Random,
                        deadline: float) -> tuple[list[str], list[str]]:
    paid: list[str] = []
    unpaid: list[str] = []

    async def place() -> str:
        is_unpaid = rng.random() < options.unpaid
        placed = await side.market.place_order(PRODUCT, rng.randint(1, 3), status="wait" if is_unpaid else "paid",
                                               send_webhook=False)
        (unpaid if is_unpaid else paid).append(placed.id_order)
        return placed.id_order  # an unpaid order's webhook is sent too ("paid", forged early): never delivered

    await place_all(options, side, rng, deadline, place)
    return paid, unpaid


async def outage(faults: Faults, seconds: float) -> None:
    faults.down(True)
    await asyncio.sleep(seconds)
    faults.down(False)


async def kill_at_random(daemons: DaemonProcess | Sequence[DaemonProcess], kills: int, window: float,
                         rng: random.Random) -> None:
    """``kills`` times, SIGKILL one of ``daemons`` drawn at random and start it again a moment later."""
    pool = [daemons] if isinstance(daemons, DaemonProcess) else list(daemons)
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.3, 1.2) * window / max(kills, 1))
        daemon = rng.choice(pool)
        daemon.kill()
        await asyncio.sleep(rng.uniform(0.05, 0.5))  # down for a moment; webhooks meanwhile fail and are resent
        await daemon.start()


async def _wait_delivered(market: SoftStoreMarketplace, paid: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if all(market.accepted(id_order) is not None for id_order in paid):
            return
        await asyncio.sleep(0.1)
