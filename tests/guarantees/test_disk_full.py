"""Disk full: a webhook that cannot be committed is not acknowledged (503), so the marketplace keeps it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from tests.support.stack import PRODUCT, Stack


async def test_disk_full_answers_503_and_the_resend_is_delivered(stack: Stack) -> None:
    """With SQLite out of pages (SQLITE_FULL) the receiver answers 503 and stores nothing; after space returns,
    the marketplace's resend is accepted and delivered once."""
    engine = stack.daemon.engine

    def full(dbapi_connection: Any, _record: Any) -> None:
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    event.listen(engine, "connect", full)
    engine.dispose()  # new connections get the cap
    placed = [await stack.market.place_order(PRODUCT, 1, send_webhook=False) for _ in range(40)]
    answers = [await stack.post({**p.payload, "pad": "x" * 8000}) for p in placed]
    refused = [p for p, a in zip(placed, answers, strict=True) if a.status_code == 503]
    assert refused, "the database never filled up"
    assert all(a.status_code in (200, 503) for a in answers)
    assert "could not store" in answers[[a.status_code for a in answers].index(503)].json()["error"]

    event.remove(engine, "connect", full)
    engine.dispose()
    assert [await stack.job(p.id_order) for p in refused] == [None] * len(refused)
    for p in refused:
        assert (await stack.post(p.payload)).status_code == 200
    await stack.drain()
    assert all(stack.market.accepted(p.id_order) is not None for p in placed)
    assert all(len([d for d in stack.market.deliveries(p.id_order) if d.status == 200]) == 1 for p in placed)
