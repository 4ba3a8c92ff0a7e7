"""The Virtual Stores adapter's pieces without a network: amounts in minor units, JWT expiry, cart items mapped to
configured products (variant first), the staff credentials required and given to the redactor."""

from __future__ import annotations

import base64
import json

import pytest

from delivery_daemon.clock import ManualClock
from delivery_daemon.config import parse_settings
from delivery_daemon.errors import ConfigError
from delivery_daemon.marketplaces.base import AdapterContext
from delivery_daemon.marketplaces.virtual_stores import VirtualStores, VirtualStoresAdapter, minor_units
from delivery_daemon.marketplaces.virtual_stores_api import jwt_expiry
from delivery_daemon.order import OrderItem

PATTERN = {"generator": "pattern", "options": {"pattern": "XXXX"}}


def adapter(**store: object) -> VirtualStoresAdapter:
    settings = parse_settings(
        {
            "stores": [
                {
                    "name": "s",
                    "marketplace": "virtual-stores",
                    "webhook_secret": "whsec_x",
                    "api_url": "https://shop.example",
                    "staff": {"email": "staff@shop.example", "password": "pa55-word-xyz"},
                    "delivery": {"channel": "email", "email": {"host": "smtp.example", "sender": "a@b.c"}},
                    "products": {"42": PATTERN, "57:deluxe": PATTERN},
                    **store,
                }
            ]
        },
        environ={},
    )
    return VirtualStores().create(
        AdapterContext(store=settings.stores[0], path="stores[0]", clock=ManualClock(), delivery=settings.delivery)
    )


def test_minor_units() -> None:
    assert minor_units("49.80", "EUR") == 4980 and minor_units(12, "usd") == 1200
    assert minor_units("500", "JPY") == 500 and minor_units("x", "eur") is None and minor_units(None, "eur") is None


def test_jwt_expiry_is_read_without_verifying() -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": 1_800_000_900}).encode()).decode().rstrip("=")
    assert jwt_expiry(f"h.{claims}.sig") == 1_800_000_900
    assert jwt_expiry("opaque-token") is None and jwt_expiry("a.!!.c") is None


def test_items_map_variants_first_and_leave_physical_goods_alone() -> None:
    shop = adapter()
    order = {
        "items": [
            {"product_id": 42, "quantity": 2},
            {"product_id": "57", "variant_id": "deluxe", "quantity": 1},
            {"product_id": "57", "variant_id": "basic", "quantity": 1},
            {"product_id": "mug", "quantity": 3},
            {"product_id": "42", "quantity": "1"},
            "junk",
        ]
    }
    assert shop.items(order) == (OrderItem("42", 3), OrderItem("57:deluxe", 1))


def test_staff_login_is_required_and_its_password_is_redacted() -> None:
    with pytest.raises(ConfigError) as info:
        adapter(staff=None)
    assert info.value.path == "stores[0].staff"
    with pytest.raises(ConfigError):
        adapter(api_url=None)
    assert "pa55-word-xyz" in adapter().secrets() and "whsec_x" in adapter().secrets()
