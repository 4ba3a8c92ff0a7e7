"""Records kept by the reference SoftStore marketplace, and the documented validation of seller/product edits.

Everything here is plain data: the marketplace in :mod:`delivery_daemon.reference.softstore` owns the
instances and the HTTP surface. The validators return either the fields to apply or a ``ValidationError``
carrying the exact message the SoftStore seller API document prints for that case.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

ORDER_STATUSES = ("wait", "paid", "canceled")


def utc_date(ts: float) -> str:
    """``2026-05-02`` (the orders' ``data_create``)."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def utc_time(ts: float) -> str:
    """``17:28:49`` (the orders' ``time_create``)."""
    return time.strftime("%H:%M:%S", time.gmtime(ts))


@dataclass
class RecordedRequest:
    """One request received under ``/api/v1``. ``status`` 0 means no answer (dropped, or still in flight)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    at: float


@dataclass
class DeliveryRecord:
    """One ``POST /orders/delivery/{token}``, whatever its outcome (``fault`` names an injected fault)."""

    id_order: str | None
    token: str
    body: bytes
    json: Any
    status: int
    at: float
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"json": self.json, "status": self.status, "at": self.at, "fault": self.fault}


@dataclass
class WebhookRecord:
    """One webhook POST made by the marketplace; ``status`` is None when no HTTP answer came back."""

    id_order: str
    url: str
    payload: dict[str, Any]
    status: int | None
    at: float
    error: str | None = None


@dataclass
class OrderRecord:
    """A marketplace order. ``delivered`` turns True when a delivery is answered 200 (never twice)."""

    id_order: str
    id_product: str
    count: int
    status: str
    token: str
    email: str
    delivered: bool = False
    internal_id: int = 0
    guest_id: str = ""
    amount: int = 0
    created_at: float = 0.0

    def listing(self) -> dict[str, str]:
        """The ``GET /orders`` item (every value a string, as documented)."""
        return {
            "id_order": self.id_order,
            "id_product": self.id_product,
            "amount": str(self.amount),
            "status_order": self.status,
            "data_create": utc_date(self.created_at),
            "time_create": utc_time(self.created_at),
            "count": str(self.count),
        }

    def to_json(self) -> dict[str, Any]:
        """The control view (``GET /_reference/orders/{id}``)."""
        return asdict(self)


@dataclass
class PlacedOrder:
    """What ``place_order`` returns: the order, its delivery token/URL, the webhook payload and its answer."""

    id_order: str
    id_product: str
    count: int
    token: str
    delivery_url: str
    payload: dict[str, Any]
    webhook_status: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProductRecord:
    """A product of the (single) reference seller."""

    id: str
    name: str
    price: int
    count: int
    created_at: float
    discount: int = 0
    uuid: str = ""
    status_moderation: str = "approved"
    rating: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """The documented ``GET /products/info/{id}`` product object."""
        return {
            "id": self.id,
            "name": self.name,
            "price": self.price,
            "count": self.count,
            "discount": self.discount,
            "uuid": self.uuid,
            "status_moderation": self.status_moderation,
            "created_at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.created_at)),
        }


class ValidationError(ValueError):
    """A documented 400 answer; ``str(exc)`` is the message."""


def valid_url(value: object, *, https_only: bool = False) -> bool:
    """An absolute http(s) URL with a host (only https when ``https_only``)."""
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    schemes = ("https",) if https_only else ("http", "https")
    return parts.scheme in schemes and bool(parts.hostname)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TAGS = re.compile(r"<[^>]*>")
_DANGEROUS = re.compile(r"[<>\"'`;\\{}]")
PROFILE_FIELDS = ("name", "description", "api_url")
PROFILE_RESTRICTED = ("balance", "rating", "api_key", "status_moderation", "id_user")


def validate_profile(body: object) -> dict[str, str]:
    """Check a ``POST /seller/profile`` body; return the (sanitised) fields to apply."""
    if not isinstance(body, dict):
        raise ValidationError("Invalid JSON")
    for key in body:
        if key not in PROFILE_FIELDS:
            raise ValidationError(f"Field '{key}' is not allowed")
    if not body:
        raise ValidationError("No valid data to update")
    out: dict[str, str] = {}
    if "name" in body:
        name = body["name"]
        if not isinstance(name, str) or not 3 <= len(name.strip()) <= 100:
            raise ValidationError("Name must be between 3 and 100 characters")
        if _DANGEROUS.search(name):
            raise ValidationError("Name contains forbidden characters")
        out["name"] = name.strip()
    if "description" in body:
        description = body["description"]
        if not isinstance(description, str):
            raise ValidationError("Description too short (min 10)")
        cleaned = _TAGS.sub("", description).strip()
        if len(cleaned) < 10:
            raise ValidationError("Description too short (min 10)")
        if len(cleaned) > 1000:
            raise ValidationError("Description too long (max 1000)")
        out["description"] = cleaned
    if "api_url" in body:
        if not valid_url(body["api_url"]):
            raise ValidationError("Invalid API URL")
        out["api_url"] = body["api_url"]
    return out


PRODUCT_PLAIN_FIELDS = ("price", "discount", "count", "api_key", "api_url")
PRODUCT_MODERATED_FIELDS = (
    "name",
    "meta_title",
    "meta_description",
    "tags",
    "text_page",
    "uuid",
    "features",
    "id_categories",
)


def validate_product_update(body: object, *, taken_uuids: set[str]) -> tuple[dict[str, Any], bool]:
    """Check a ``POST /products/update/{id}`` body; return (fields to apply, whether it needs moderation)."""
    if not isinstance(body, dict):
        raise ValidationError("Invalid JSON")
    for key in body:
        if key not in PRODUCT_PLAIN_FIELDS and key not in PRODUCT_MODERATED_FIELDS:
            raise ValidationError(f"Field '{key}' is not allowed")
    if not body:
        raise ValidationError("No fields to update")
    checks: dict[str, tuple[bool, str]] = {}
    if "price" in body:
        checks["price"] = (_is_int(body["price"]) and 1 <= body["price"] <= 9_999_999, "Invalid price")
    if "discount" in body:
        checks["discount"] = (_is_int(body["discount"]) and 0 <= body["discount"] <= 100, "Invalid discount")
    if "count" in body:
        checks["count"] = (_is_int(body["count"]) and body["count"] >= 0, "Invalid count")
    if "api_url" in body:
        checks["api_url"] = (valid_url(body["api_url"]), "Invalid API URL")
    if "id_categories" in body:
        checks["id_categories"] = (_is_int(body["id_categories"]) and body["id_categories"] > 0, "Invalid category id")
    if "name" in body:
        name = body["name"]
        checks["name"] = (
            isinstance(name, str) and 3 <= len(name.strip()) <= 255,
            "Name must be between 3 and 255 characters",
        )
    if "text_page" in body:
        text = body["text_page"]
        ok = isinstance(text, str) and len(text.strip()) >= 10
        checks["text_page"] = (ok, "Description too short (min 10)")
    if "features" in body:
        features = body["features"]
        ok = isinstance(features, str) and len([f for f in features.split(",") if f.strip()]) >= 3
        checks["features"] = (ok, "Features must contain at least 3 values")
    if "uuid" in body:
        uuid = body["uuid"]
        if not isinstance(uuid, str) or not uuid.strip():
            raise ValidationError("Invalid UUID")
        checks["uuid"] = (uuid not in taken_uuids, "UUID already exists")
    for key in ("api_key", "meta_title", "meta_description", "tags"):
        if key in body:
            checks[key] = (isinstance(body[key], str), f"Invalid {key}")
    for ok, message in checks.values():
        if not ok:
            raise ValidationError(message)
    moderation = any(key in body for key in PRODUCT_MODERATED_FIELDS)
    return dict(body), moderation
