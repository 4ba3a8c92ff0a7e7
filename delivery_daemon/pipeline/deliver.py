"""Step 4 of an order: hand the stored content to the store's sink. The same bytes go out on every attempt."""

from __future__ import annotations

from delivery_daemon.marketplaces.base import Receipt, Sink
from delivery_daemon.order import Content
from delivery_daemon.storage.models import Job


async def deliver(sink: Sink, job: Job) -> Receipt:
    """Send the job's stored content; raises Retry or Dead from the sink when it did not go through."""
    assert job.content is not None, "content is stored before the first delivery attempt"
    return await sink.send(job, Content.from_json(job.content))
