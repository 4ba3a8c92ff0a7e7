"""Webhook signature schemes, both ways: the adapters verify with these, the reference marketplaces and the outbound
webhook channel sign with them. Every comparison is constant-time and every check works on the raw body bytes.

* hex HMAC of the body (Sellix ``X-Sellix-Signature``, Shoppy ``X-Shoppy-Signature``, SellAuth ``X-Signature``);
* a secret token in the webhook URL, for a marketplace that signs nothing (Gumroad's Ping);
* Stripe ``Stripe-Signature: t=…,v1=…[,v1=…]``: hex HMAC-SHA256 of ``"{t}.{body}"``;
* Paddle Billing ``Paddle-Signature: ts=…;h1=…[;h1=…]``: hex HMAC-SHA256 of ``"{ts}:{body}"``;
* Standard Webhooks ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature: v1,<base64> …``: HMAC-SHA256 of
  ``"{id}.{timestamp}.{body}"`` with the base64 key after ``whsec_`` (:func:`~delivery_daemon.config.whsec_key`).

Timestamped schemes are checked against the injected clock, ``tolerance`` seconds both ways (a signature from the
future is as suspect as a stale one). A failed check raises :class:`~delivery_daemon.errors.WebhookRejected` 403
(400 when the headers are not even readable); the reason never contains a secret or a signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

from delivery_daemon.errors import WebhookRejected

Algorithm = Literal["sha256", "sha512"]


def _same(expected: str, sent: str) -> bool:
    """Constant-time comparison as bytes: compare_digest raises TypeError on non-ASCII str (a forged header
    would otherwise be answered 500)."""
    return hmac.compare_digest(expected.encode(), sent.encode())


def same_text(expected: str, sent: str) -> bool:
    """True when ``sent`` is ``expected``, compared in constant time (for secrets and the ids checked with them)."""
    return _same(expected, sent)


def check_token(expected: str, sent: str | None, name: str = "token") -> None:
    """Raise WebhookRejected 403 unless ``sent`` is the secret token ``expected`` (constant time; the reason names
    the parameter, never a value)."""
    if not sent:
        raise WebhookRejected(403, f"missing {name}")
    if not _same(expected, sent):
        raise WebhookRejected(403, f"invalid {name}")


def hex_hmac(secret: bytes, body: bytes, algorithm: Algorithm = "sha512") -> str:
    """The lowercase hex HMAC of ``body``."""
    return hmac.new(secret, body, getattr(hashlib, algorithm)).hexdigest()


def check_hex_hmac(
    secret: bytes, body: bytes, sent: str | None, algorithm: Algorithm = "sha512", header: str = "signature"
) -> None:
    """Raise WebhookRejected unless ``sent`` is the hex HMAC of ``body``."""
    if not sent:
        raise WebhookRejected(403, f"missing {header} header")
    if not _same(hex_hmac(secret, body, algorithm), sent.strip().lower()):
        raise WebhookRejected(403, "invalid signature")


def _check_time(timestamp: int, now: float, tolerance: float) -> None:
    if abs(now - timestamp) > tolerance:
        raise WebhookRejected(403, f"signature timestamp outside the {tolerance:g} s tolerance")


# -- Stripe ------------------------------------------------------------------------------------------------------


def stripe_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``v1`` value Stripe sends for ``body`` at ``timestamp``."""
    return hex_hmac(secret.encode(), f"{timestamp}.".encode() + body, "sha256")


def stripe_header(secrets: list[str], body: bytes, timestamp: int) -> str:
    """A ``Stripe-Signature`` header with one ``v1`` per secret (as during a secret rotation)."""
    return ",".join([f"t={timestamp}", *(f"v1={stripe_signature(s, body, timestamp)}" for s in secrets)])


def verify_stripe(header: str | None, body: bytes, secret: str, now: float, tolerance: float) -> int:
    """Check a ``Stripe-Signature`` header; returns its timestamp. Any one ``v1`` may match (secret rotation);
    other schemes (``v0``) are ignored, as Stripe's own libraries do."""
    timestamp, signatures = _timestamped(header, ",", ("t", "v1"), "Stripe-Signature")
    return _check_any(stripe_signature(secret, body, timestamp), signatures, timestamp, now, tolerance)


def _check_any(expected: str, signatures: list[str], timestamp: int, now: float, tolerance: float) -> int:
    """``timestamp`` when one of ``signatures`` is ``expected`` and the time is within ``tolerance``."""
    if not any(_same(expected, sent) for sent in signatures):
        raise WebhookRejected(403, "invalid signature")
    _check_time(timestamp, now, tolerance)
    return timestamp


def _timestamped(header: str | None, separator: str, keys: tuple[str, str], name: str) -> tuple[int, list[str]]:
    """The timestamp and the signatures of a ``t=…,v1=…`` style header (``keys``: the timestamp's and the
    signature's names); other keys are ignored. WebhookRejected 403 when either is missing, 400 when unreadable."""
    if not header:
        raise WebhookRejected(403, f"missing {name} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(separator):
        key, _, value = item.strip().partition("=")
        if key == keys[0]:
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookRejected(400, f"unreadable {name} timestamp") from None
        elif key == keys[1]:
            signatures.append(value.strip().lower())
    if timestamp is None or not signatures:
        raise WebhookRejected(403, f"{name} has no timestamp or no {keys[1]} signature")
    return timestamp, signatures


# -- Standard Webhooks -------------------------------------------------------------------------------------------


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def standard_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(key, msg_id, timestamp, body),
    }


def verify_standard(headers: Mapping[str, str], body: bytes, keys: list[bytes], now: float, tolerance: float) -> str:
    """Check Standard Webhooks headers against any of ``keys``; returns the ``webhook-id``.

    ``webhook-signature`` may hold several space-separated signatures (key rotation); one valid ``v1`` suffices.
    """
    msg_id = headers.get("webhook-id")
    raw_timestamp = headers.get("webhook-timestamp")
    sent = headers.get("webhook-signature")
    if not msg_id or not raw_timestamp or not sent:
        raise WebhookRejected(403, "missing webhook-id, webhook-timestamp or webhook-signature header")
    if len(msg_id) > 255:
        raise WebhookRejected(400, "webhook-id is too long")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookRejected(400, "unreadable webhook-timestamp") from None
    candidates = [part for part in sent.split() if part.startswith("v1,")]
    expected = [standard_signature(key, msg_id, timestamp, body) for key in keys]
    if not any(_same(e, c) for e in expected for c in candidates):
        raise WebhookRejected(403, "invalid signature")
    _check_time(timestamp, now, tolerance)
    return msg_id


# -- Paddle Billing ----------------------------------------------------------------------------------------------


def paddle_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``h1`` value Paddle Billing sends for ``body`` at ``timestamp``: the notification destination's secret key
    is used as it is (its UTF-8 bytes), as Paddle's own SDKs do."""
    return hex_hmac(secret.encode(), f"{timestamp}:".encode() + body, "sha256")


def paddle_header(secrets: list[str], body: bytes, timestamp: int) -> str:
    """A ``Paddle-Signature`` header with one ``h1`` per secret (as during a secret rotation)."""
    return ";".join([f"ts={timestamp}", *(f"h1={paddle_signature(s, body, timestamp)}" for s in secrets)])


def verify_paddle(header: str | None, body: bytes, secret: str, now: float, tolerance: float) -> int:
    """Check a ``Paddle-Signature`` header; returns its timestamp. Any one ``h1`` may match (Paddle sends one per
    active secret while a secret is rotated); keys other than ``ts`` and ``h1`` are ignored (a future scheme)."""
    timestamp, signatures = _timestamped(header, ";", ("ts", "h1"), "Paddle-Signature")
    return _check_any(paddle_signature(secret, body, timestamp), signatures, timestamp, now, tolerance)
