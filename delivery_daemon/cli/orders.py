"""``delivery-daemon orders list|show|retry|redeliver|cancel|revoke|reissue``: look at and act on the queue from a
shell.

They open the daemon's database directly (the same file a running daemon uses; SQLite WAL lets both work at once).
A table is printed for people, ``--json`` prints one JSON document for scripts. Exit codes: 0 done, 1 nothing
matched or the action does not apply to the order's state (the message says which), 2 bad configuration/usage.
The delivered text (licence keys) is shown only with ``--reveal``; the webhook payload (delivery tokens) never.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

from delivery_daemon.cli.connect import add_database_options, open_cipher, open_engine
from delivery_daemon.clock import SystemClock
from delivery_daemon.order import Content
from delivery_daemon.storage.models import Attempt, Job, JobState, Revocation
from delivery_daemon.storage.operator import (
    ActionRefused,
    AmbiguousOrder,
    OrderFilter,
    OrderNotFound,
    Orders,
    redelivery_note,
)
from delivery_daemon.tables import Column, render_table

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, now: float) -> float:
    """``30m``, ``2h``, ``7d`` (ago) or an ISO 8601 date/time (UTC when no zone) → epoch seconds."""
    match = _DURATION.match(value.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since: expected e.g. 2h, 7d or 2025-01-31, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def job_document(job: Job, *, reveal: bool = False) -> dict[str, Any]:
    """A job as JSON for scripts: never the payload; the content only when ``reveal``."""
    document: dict[str, Any] = {
        "job": job.id,
        "store": job.store,
        "order_id": job.order_id,
        "marketplace": job.marketplace,
        "product_id": job.product_id,
        "state": job.state,
        "quantity": job.quantity,
        "buyer_email": job.buyer_email,
        "attempts": job.attempts,
        "webhooks_received": job.received,
        "last_error": job.last_error,
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "due_at": iso(job.due_at),
        "delivered_at": iso(job.delivered_at),
        "content_stored": job.content is not None,
        "flag": job.flag,  # refunded | disputed: delivered and flagged, or (running) a refund pending
    }
    if reveal and job.content is not None:
        content = Content.from_json(job.content)  # already decrypted by cmd_show
        document["content"] = {"text": content.text, "download": content.download, "keys": list(content.keys)}
    return document


def attempt_document(attempt: Attempt) -> dict[str, Any]:
    return {
        "at": iso(attempt.at),
        "step": attempt.step,
        "outcome": attempt.outcome,
        "state": attempt.state,
        "http_status": attempt.http_status,
        "error": attempt.error,
        "duration_ms": attempt.duration_ms,
    }


def revocation_document(revocation: Revocation) -> dict[str, Any]:
    """A revocation as JSON for scripts: never its content (the revoked keys are in ``orders show --reveal``'s
    ``revoked``)."""
    return {
        "issue": revocation.issue,
        "reason": revocation.reason,
        "sent": revocation.sent,
        "state": revocation.state,
        "attempts": revocation.attempts,
        "created_at": iso(revocation.created_at),
        "hook_done_at": iso(revocation.hook_done_at),
        "notified_at": iso(revocation.notified_at),
        "last_error": revocation.last_error,
    }


def _orders(args: argparse.Namespace) -> Orders:
    return Orders(open_engine(args), SystemClock())


def _say(message: str, *, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout)


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2))


def cmd_list(args: argparse.Namespace) -> int:
    orders = _orders(args)
    since = parse_since(args.since, orders.clock.now()) if args.since else None
    jobs = orders.search(
        OrderFilter(state=args.state, store=args.store, product=args.product, since=since, limit=args.limit)
    )
    if args.json:
        _print_json([job_document(job) for job in jobs])
        return 0
    if not jobs:
        _say("no orders match")
        return 0
    # Nothing is cut but the error, so an order id can be grepped from a terminal and a pipe alike.
    columns = [
        Column(name, "right" if name in ("job", "qty", "tries") else "left")
        for name in ("job", "store", "order", "product", "qty", "state", "tries", "created", "last error")
    ]
    rows = [
        (
            job.id,
            job.store,
            job.order_id,
            job.product_id,
            job.quantity or "-",
            job.state,
            job.attempts,
            iso(job.created_at),
            (job.last_error or "")[:60],
        )
        for job in jobs
    ]
    print(render_table(columns, rows, title=f"orders (newest first, at most {args.limit})"))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    orders = _orders(args)
    job = orders.resolve(args.ref, args.store)
    assert job.id is not None
    history = orders.history(job.id)
    if args.reveal and job.content is not None:
        cipher = open_cipher(args)  # the content is sealed at rest; only --reveal needs the key
        if cipher is not None:
            job.content = cipher.open(job.content, f"{job.store}/{job.order_id}/content")
    revocations = orders.revocations(job.id)
    if args.json:
        document = {**job_document(job, reveal=args.reveal), "history": [attempt_document(a) for a in history]}
        document["revocations"] = [revocation_document(r) for r in revocations]
        if args.reveal:
            document["revoked"] = _revoked_contents(args, job, revocations)
        _print_json(document)
        return 0
    print(render_table(("key", "value"), job_document(job).items(), show_header=False))
    history_rows = [
        (
            iso(attempt.at),
            attempt.step,
            attempt.outcome,
            attempt.state,
            attempt.http_status or "",
            f"{attempt.duration_ms:.0f}" if attempt.duration_ms is not None else "",
            attempt.error,
        )
        for attempt in history
    ]
    print()
    print(render_table(("time", "step", "outcome", "state", "http", "ms", "error"), history_rows, title="history"))
    if revocations:
        print()
        rows = [
            (r.issue, r.reason, "yes" if r.sent else "no", r.state, r.attempts, iso(r.created_at), r.last_error)
            for r in revocations
        ]
        print(
            render_table(("issue", "reason", "sent", "state", "tries", "recorded", "error"), rows, title="revocations")
        )
        if args.reveal:
            for issue, keys in _revoked_contents(args, job, revocations).items():
                print(f"revoked keys of issue {issue}: " + ", ".join(keys))
    if job.content is None:
        print("delivered content: none stored" + (" (purged)" if job.state == "delivered" else ""))
    elif args.reveal:
        content = Content.from_json(job.content)
        print("delivered content:")
        print(content.text)
        if content.download:
            print(f"download: {content.download}")
    else:
        print("delivered content: stored, hidden (add --reveal to print it)")
    return 0


def _revoked_contents(args: argparse.Namespace, job: Job, revocations: list[Revocation]) -> dict[str, list[str]]:
    """The keys of each revoked content, by issue (``--reveal`` only: they are opened with the daemon's key)."""
    cipher = open_cipher(args)
    revealed: dict[str, list[str]] = {}
    for revocation in revocations:
        if revocation.content is None:
            continue
        raw = revocation.content
        if cipher is not None:
            raw = cipher.open(raw, f"{job.store}/{job.order_id}/content")
        revealed[str(revocation.issue)] = list(Content.from_json(raw).keys)
    return revealed


def cmd_revoke(args: argparse.Namespace) -> int:
    job = _orders(args).revoke(args.ref, args.store)
    _say(
        f"order {job.order_id} (#{job.id}, {job.store}): revocation recorded; the running daemon calls the product's "
        "revoke hook and tells the store's channel shortly ('orders show' follows it)"
    )
    return 0


def cmd_reissue(args: argparse.Namespace) -> int:
    job = _orders(args).reissue(args.ref, args.store)
    _say(
        f"order {job.order_id} (#{job.id}, {job.store}): its keys are revoked and a new content is queued; the running "
        "daemon generates and delivers it through the store's channel shortly"
    )
    _say(redelivery_note(job.marketplace))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    orders = _orders(args)
    if args.all_dead:
        if args.ref:
            raise argparse.ArgumentTypeError("give an order or --all-dead, not both")
        ids = orders.retry_all_dead()
        if not ids:
            _say("no dead orders to retry", error=True)
            return 1
        _say(f"queued {len(ids)} dead order(s) again: " + ", ".join(f"#{i}" for i in ids))
        return 0
    if not args.ref:
        raise argparse.ArgumentTypeError("give an order id (or --all-dead)")
    job = orders.retry(args.ref, args.store)
    _say(f"order {job.order_id} (#{job.id}, {job.store}) queued again; the running daemon picks it up shortly")
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    job = _orders(args).redeliver(args.ref, args.store)
    _say(f"order {job.order_id} (#{job.id}, {job.store}) queued to send its stored content again.")
    _say(redelivery_note(job.marketplace))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job = _orders(args).cancel(args.ref, args.store)
    _say(f"order {job.order_id} (#{job.id}, {job.store}) cancelled; it will not be attempted again")
    return 0


def _guarded(command: Any) -> Any:
    """Turn "nothing matched" and "does not apply" into one line on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            result: int = command(args)
            return result
        except (OrderNotFound, AmbiguousOrder, ActionRefused) as exc:
            _say(f"delivery-daemon: {exc}", error=True)
            return 1
        except argparse.ArgumentTypeError as exc:
            _say(f"delivery-daemon: error: {exc}", error=True)
            return 2

    return run


def _order_args(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    parser.add_argument(
        "ref", metavar="ID", nargs="?" if optional else None, help="the marketplace's order id, or #N for job N"
    )
    parser.add_argument("--store", help="the store, when the same order id exists in several")
    add_database_options(parser)


def register(sub: Any) -> None:
    """Add ``orders`` and its sub-commands to the CLI."""
    orders = sub.add_parser("orders", help="list, inspect, retry, redeliver, cancel, revoke or reissue orders")
    actions = orders.add_subparsers(dest="orders_command", required=True)

    listing = actions.add_parser("list", help="orders, newest first")
    listing.add_argument("--state", choices=[state.value for state in JobState])
    listing.add_argument("--store")
    listing.add_argument("--product")
    listing.add_argument("--since", help="only orders received since: 30m, 2h, 7d or an ISO date/time (UTC)")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_database_options(listing)
    listing.set_defaults(func=_guarded(cmd_list))

    show = actions.add_parser("show", help="one order and every attempt")
    _order_args(show)
    show.add_argument("--reveal", action="store_true", help="also print the delivered text (licence keys)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_guarded(cmd_show))

    retry = actions.add_parser("retry", help="queue a dead, waiting, held or cancelled order again")
    _order_args(retry, optional=True)
    retry.add_argument("--all-dead", action="store_true", help="queue every dead order again")
    retry.set_defaults(func=_guarded(cmd_retry))

    redeliver = actions.add_parser("redeliver", help="send a delivered order's stored content again")
    _order_args(redeliver)
    redeliver.set_defaults(func=_guarded(cmd_redeliver))

    cancel = actions.add_parser("cancel", help="never attempt an order again")
    _order_args(cancel)
    cancel.set_defaults(func=_guarded(cmd_cancel))

    revoke = actions.add_parser("revoke", help="revoke a delivered order's keys (generator hook, order.revoked)")
    _order_args(revoke)
    revoke.set_defaults(func=_guarded(cmd_revoke))

    reissue = actions.add_parser("reissue", help="revoke a delivered order's keys and deliver new ones")
    _order_args(reissue)
    reissue.set_defaults(func=_guarded(cmd_reissue))
