"""What the adapters' :class:`~delivery_daemon.marketplaces.listing.OrderListing` implementations share: reading a
list endpoint's answer into the error tree the watchdog expects, and marketplace dates into unix seconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from delivery_daemon.errors import AuthenticationFailed, MarketplaceError, Retry
from delivery_daemon.marketplaces.base import message_of


def listing_json(response: httpx.Response, what: str) -> Any:
    """The JSON of a list endpoint's 200; else :class:`Retry` (429, 5xx, unreadable), :class:`AuthenticationFailed`
    (401, 403) or :class:`MarketplaceError` (any other answer), each naming ``what`` and the status, never the URL."""
    status = response.status_code
    if status in (401, 403):
        raise AuthenticationFailed(f"{what} refused our credentials ({status})")
    if status == 429 or status >= 500:
        raise Retry(f"{what} answered {status}", http_status=status)
    if status != 200:
        raise MarketplaceError(f"{what} answered {status}: {message_of(response)}"[:300])
    try:
        return response.json()
    except ValueError:
        raise Retry(f"{what} answer is not JSON", http_status=status) from None


def utc_seconds(date: Any, time: Any = "00:00:00") -> float | None:
    """``"2026-05-02"`` and ``"17:28:49"`` (a marketplace's local date and time, read as UTC) in unix seconds; None
    when they do not parse."""
    if not isinstance(date, str) or not isinstance(time, str):
        return None
    try:
        return datetime.fromisoformat(f"{date.strip()}T{time.strip()}").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def epoch_seconds(value: Any) -> float | None:
    """A unix timestamp given as a number or a decimal string, or an ISO 8601 date-time (UTC when it names no zone);
    None when it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
