"""What every chaos run is built from (:mod:`.run` for SoftStore, :mod:`.webhooks` for the webhook-only
marketplaces): the run's options, the random faults, the daemon as a killable child process, the marketplace side
that announces orders until the daemon acknowledges them, and the kills and the outage on their timers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from delivery_daemon.http.serving import bind_socket
from delivery_daemon.reference.chaos.verdict import Verdict
from delivery_daemon.reference.faults import DeliveryFault, Faults

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
    never_sent: float = 0.02  # paid orders whose webhook is never sent: the watchdog must raise each (SoftStore)
    refund: float = 0.05  # orders refunded during their first delivery (webhook runs of marketplaces with refunds)
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


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10_000


def restart_port(rng: random.Random | None = None) -> int:
    """A free loopback port for a daemon that is killed and started again on it, below the kernel's ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: after a kill, any outgoing connection (to PostgreSQL, to the
    marketplace) may be given it as its local port, and the restart then fails with "address already in use" (a
    three-replica PostgreSQL chaos test did). Ports below the range are never handed out that way."""
    low = 32_768
    with contextlib.suppress(OSError, ValueError):
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    pick = rng or random.Random()  # noqa: S311  (a port number, not a secret)
    for _ in range(100):
        port = pick.randrange(LOWEST_PORT, max(low, LOWEST_PORT + 1))
        with contextlib.suppress(OSError), bind_socket("127.0.0.1", port):
            return port
    raise RuntimeError(f"no free port between {LOWEST_PORT} and {low}")


class DaemonProcess:
    """``delivery-daemon serve`` as a child process that can be killed and started again on the same port (take it
    from :func:`restart_port`)."""

    def __init__(self, config: Path, url: str, log: Path, env: dict[str, str]) -> None:
        self.config, self.url, self.log, self.env = config, url, log, env
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(  # noqa: S603  (our own interpreter and module, fixed arguments)
                [
                    sys.executable,
                    "-m",
                    "delivery_daemon",
                    "serve",
                    "--config",
                    str(self.config),
                    "--log-format",
                    "json",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )

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


async def place_all(
    options: ChaosOptions,
    side: Announcer,
    rng: random.Random,
    deadline: float,
    place: Callable[[], Awaitable[str | None]],
) -> None:
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


def daemon_config(workdir: Path, port: int, api_base: str, database_url: str | None = None) -> dict[str, Any]:
    """The daemon's configuration for a run: short retries (but many), a short lease, a tight delivery timeout.
    The database is ``database_url``, else ``chaos.db`` in ``workdir``."""
    return {
        "database": {"url": database_url or f"sqlite:///{workdir / 'chaos.db'}"},
        "server": {"host": "127.0.0.1", "port": port},
        "worker": {"poll_interval": 0.2, "lease_seconds": 3.0, "concurrency": 16},
        "delivery": {"timeout": 1.0, "jitter": True, "retry_schedule": [0.05, 0.1, 0.2, 0.5] + [1.0] * 200},
        "logging": {"format": "json", "level": "info"},
        # The watchdog lists the orders under the kills and the faults; the run ends with `reconcile` (no grace).
        "watchdog": {"interval": 10},
        "stores": [
            {
                "name": STORE,
                "marketplace": "softstore",
                "api_url": api_base,
                "api_key": "${CHAOS_API_KEY}",
                "default": {
                    "generator": "pattern",
                    "options": {"pattern": "XXXXX-XXXXX-XXXXX-XXXXX-XXXXX"},
                    "template": "Order {order_id}\n{keys_lines}",
                },
            }
        ],
    }


async def reconcile(config: Path, env: dict[str, str], log: Path) -> int:
    """``delivery-daemon reconcile`` over the run's store from a child process (as an operator would run it next to
    the daemons), its report appended to ``log``; its exit status."""

    def run() -> int:
        with log.open("ab") as out:
            return subprocess.run(  # noqa: S603  (our own interpreter and module, fixed arguments)
                [sys.executable, "-m", "delivery_daemon", "reconcile", "--config", str(config), "--since", "1h"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
                timeout=120,
            ).returncode

    return await asyncio.to_thread(run)


async def every(seconds: float, action: Callable[[], None], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if not stop.is_set():
            action()


async def later(seconds: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(seconds)
    await action()


def report(verdict: Verdict, started: float, say: Callable[[str], None]) -> None:
    """The summary line, then the first violations."""
    say(verdict.line() + f" ({time.monotonic() - started:.1f} s)")
    for violation in verdict.violations[:20]:
        say(f"  violation: {violation}")


async def outage(faults: Faults, seconds: float) -> None:
    faults.down(True)
    await asyncio.sleep(seconds)
    faults.down(False)


async def kill_at_random(
    daemons: DaemonProcess | Sequence[DaemonProcess], kills: int, window: float, rng: random.Random
) -> None:
    """``kills`` times, SIGKILL one of ``daemons`` drawn at random and start it again a moment later."""
    pool = [daemons] if isinstance(daemons, DaemonProcess) else list(daemons)
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.3, 1.2) * window / max(kills, 1))
        daemon = rng.choice(pool)
        daemon.kill()
        await asyncio.sleep(rng.uniform(0.05, 0.5))  # down for a moment; webhooks meanwhile fail and are resent
        await daemon.start()
