"""The verdict of a chaos run, taken from the marketplace's own record, the daemon's database and its log.

Each check is one promise to the seller; a broken one becomes a line in :attr:`Verdict.violations`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from delivery_daemon.reference.chaos import database as chaos_database
from delivery_daemon.reference.softstore import SoftStoreMarketplace
from delivery_daemon.storage.models import FINAL


@dataclass
class Verdict:
    orders: int
    kills: int
    faults: int
    resent: int
    unpaid: int = 0
    never_sent: int = 0
    raised: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    mismatched: int = 0
    reused_keys: int = 0
    unfinished: int = 0
    integrity: str = "?"
    leaks: int = 0
    fulfilled: int | None = None  # orders the marketplace shows fulfilled once; None: it has no such step
    refunded: int = 0  # orders refunded during their delivery (webhook runs with refunds)
    refunded_accepted: int = 0  # of those, the ones whose delivery the endpoint accepted (then revoked)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self) -> str:
        """The one summary line."""
        return (
            f"chaos: orders={self.orders} unpaid={self.unpaid} kills={self.kills} faults={self.faults} "
            f"resent={self.resent} never_sent={self.never_sent} raised={self.raised} refunded={self.refunded} "
            f"delivered={self.delivered} duplicates={self.duplicates} lost={self.lost} "
            f"mismatched={self.mismatched} reused_keys={self.reused_keys} unfinished={self.unfinished} "
            f"integrity={self.integrity} leaks={self.leaks}"
            + (f" fulfilled={self.fulfilled}" if self.fulfilled is not None else "")
            + f" -> {'OK' if self.ok else 'VIOLATED'}"
        )


def _keys(body: object) -> list[str]:
    text = str(body.get("text", "")) if isinstance(body, dict) else ""
    return [line.strip() for line in text.splitlines()[1:] if line.strip()]  # line 1 is "Order <id>"


@dataclass(frozen=True)
class Seen:
    """One delivery attempt as the receiving side recorded it: accepted or not, its content in a canonical form
    (equal strings for identical contents), and how to read the keys out of it."""

    accepted: bool
    content: str
    keys: Callable[[], list[str]]


def check_orders(verdict: Verdict, orders: Mapping[str, tuple[int, Sequence[Seen]]]) -> Counter[str]:
    """The per-order promises over ``orders`` (order id -> (quantity, attempts)): delivered, accepted once, the
    same content on every attempt with ``quantity`` keys, no key on two orders. Returns each key's order count."""
    bad = verdict.violations
    owners: Counter[str] = Counter()
    for order_id, (quantity, attempts) in orders.items():
        accepted = [seen for seen in attempts if seen.accepted]
        if not accepted:
            verdict.lost += 1
            bad.append(f"order {order_id}: paid, never delivered ({len(attempts)} attempts)")
            continue
        verdict.delivered += 1
        if len(accepted) > 1:
            verdict.duplicates += len(accepted) - 1
            bad.append(f"order {order_id}: {len(accepted)} deliveries accepted")
        contents = {seen.content for seen in attempts}
        keys = accepted[0].keys()
        if len(contents) > 1 or len(keys) != quantity:
            verdict.mismatched += 1
            bad.append(
                f"order {order_id}: {len(contents)} different contents, {len(keys)} keys for quantity {quantity}"
            )
        owners.update(set(keys))
    verdict.reused_keys = sum(1 for count in owners.values() if count > 1)
    if verdict.reused_keys:
        bad.append(f"{verdict.reused_keys} keys were given to more than one order")
    return owners


def judge(
    market: SoftStoreMarketplace,
    *,
    paid: list[str],
    unpaid: list[str],
    never_sent: Sequence[str] = (),
    database: Path | str,
    log: Path | Sequence[Path],
    kills: int,
    resent: int,
) -> Verdict:
    """Check every promise; ``paid``/``unpaid`` are the order ids the run placed, ``database`` a SQLite file or a
    database URL, ``log`` the output of every daemon process (one per replica)."""
    verdict = Verdict(
        orders=len(paid) + len(unpaid) + len(never_sent),
        kills=kills,
        faults=sum(market.faults.injected.values()),
        resent=resent,
        unpaid=len(unpaid),
        never_sent=len(never_sent),
    )
    bad = verdict.violations
    key_owner = check_orders(
        verdict,
        {
            id_order: (
                market.orders[id_order].count,
                [
                    Seen(record.status == 200, json.dumps(record.json, sort_keys=True), partial(_keys, record.json))
                    for record in market.deliveries(id_order)
                ],
            )
            for id_order in paid
        },
    )
    for id_order in unpaid:
        if market.accepted(id_order) is not None:
            bad.append(f"order {id_order}: unpaid, yet delivered")
    check_missed(verdict, market, never_sent, database)
    check_database(verdict, database)
    for path in [log] if isinstance(log, Path) else log:
        _check_log(verdict, market, path, key_owner)
    return verdict


def check_missed(
    verdict: Verdict, market: SoftStoreMarketplace, never_sent: Sequence[str], database: Path | str
) -> None:
    """Each paid order whose webhook was never sent is an open missed order (SoftStore cannot be delivered without
    it), and no other order is: anything else is lost, or a false alarm left open."""
    open_missed = chaos_database.open_missed_orders(database)
    for id_order in never_sent:
        if market.accepted(id_order) is not None:
            verdict.violations.append(f"order {id_order}: its webhook was never sent, yet it was delivered")
        if id_order in open_missed:
            verdict.raised += 1
        else:
            verdict.lost += 1
            verdict.violations.append(f"order {id_order}: paid, webhook never sent, not raised as missed")
    for id_order in sorted(open_missed - set(never_sent)):
        verdict.violations.append(f"order {id_order}: raised as missed, but its webhook was acknowledged")


def check_database(verdict: Verdict, database: Path | str) -> None:
    """The database half (:mod:`delivery_daemon.reference.chaos.database`), and every job final and counted
    delivered."""
    report = chaos_database.check_database(database)
    states = report.states
    verdict.integrity = report.integrity
    verdict.violations.extend(f"database: {problem}" for problem in report.problems)
    verdict.unfinished = sum(int(count) for state, count in states.items() if state not in FINAL)
    if verdict.unfinished:
        verdict.violations.append(f"jobs left unfinished after the drain: {states}")
    # A refunded order the endpoint accepted is delivered and flagged, or cancelled when the daemon saw the attempt fail
    # (an answer after its timeout): each counts 0 or 1 here.
    extra = int(states.get("delivered", 0)) - verdict.delivered
    if not 0 <= extra <= verdict.refunded_accepted:
        verdict.violations.append(
            f"the daemon records {states.get('delivered', 0)} delivered jobs, the marketplace {verdict.delivered}"
            + (f" (+ up to {verdict.refunded_accepted} refunded)" if verdict.refunded_accepted else "")
        )


def _check_log(verdict: Verdict, market: SoftStoreMarketplace, log: Path, keys: Counter[str]) -> None:
    """No API key, JWT, delivery token or generated key in anything the daemon printed."""
    check_log(verdict, log, {market._api_key, *market._jwts, *(order.token for order in market.orders.values()), *keys})


def check_log(verdict: Verdict, log: Path, secrets: set[str]) -> None:
    """None of ``secrets`` in anything the daemon printed."""
    text = log.read_text(encoding="utf-8", errors="replace")
    found = [secret for secret in secrets if secret and secret in text]
    verdict.leaks += len(found)
    if found:
        verdict.violations.append(f"{len(found)} secrets appear in the daemon's log {log}")
