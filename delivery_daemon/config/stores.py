"""A store's sections of the configuration: the marketplace account, its products, how its webhooks are signed and
where its orders are delivered (the marketplace, the buyer's email or the seller's own system)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from delivery_daemon.config.formatter import expected_extra
from delivery_daemon.config.sections import Model

_HTTP_URL = "an http(s) URL"

# The Standard Webhooks secret format: validated here, used by net.signatures' scheme (and its users).
WHSEC_PREFIX = "whsec_"
WHSEC_FORM = "whsec_ followed by the base64 of a random key of at least 16 bytes"
"""What a Standard Webhooks secret looks like, for configuration errors."""
WHSEC_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"""A well-formed example secret (not one in use anywhere: examples are printed in errors)."""


def whsec_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError if it is not one."""
    raw = secret.removeprefix(WHSEC_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("the key is shorter than 16 bytes")
    return key


class ProductSettings(Model):
    """How one product is fulfilled: a generator, its options and the delivery text template.

    ``listed_count`` is the stock count to show on the marketplace for a product whose generator is unlimited
    (stock sync leaves such products alone unless it is set); for a ``stock`` product it replaces the pool's count.
    ``pool`` names a shared pool (see :class:`~delivery_daemon.config.sections.PoolSettings`).
    """

    generator: str = Field(
        examples=["pattern"],
        json_schema_extra=expected_extra(
            "the name of a generator plugin (shipped: pattern, stock, signed, download, command, http)"
        ),
    )
    options: dict[str, Any] = Field(default_factory=dict)
    template: str = Field(
        default="{keys_lines}",
        json_schema_extra=expected_extra(
            "text with the fields {keys}, {keys_lines}, {order_id}, {product_id}, {quantity}, {download}, {text}"
        ),
    )
    listed_count: int | None = Field(default=None, ge=0)
    pool: str | None = Field(
        default=None,
        examples=["shared"],
        json_schema_extra=expected_extra("the name of a pool under the top-level pools section"),
    )
    """The shared stock pool (``pools.<name>``) the product's keys come from instead of its own; any store's
    products may name the same pool. Only a generator that takes keys from stock (``stock``) draws on one."""


class SignatureSettings(Model):
    """How a store's inbound webhooks are signed, where the marketplace's document leaves it open.

    Each adapter documents its defaults; a field left unset keeps them.
    """

    header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        examples=["X-Shoppy-Signature"],
        json_schema_extra=expected_extra("an HTTP header name: letters, digits and -"),
    )
    algorithm: Literal["sha256", "sha512"] | None = None
    tolerance: float = Field(default=300.0, gt=0, le=86_400)
    """Seconds a timestamped signature may be old (or ahead of our clock)."""


class SmtpSettings(Model):
    """The seller's own SMTP server, for the ``email`` delivery channel."""

    host: str = Field(min_length=1, examples=["smtp.example.com"])
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(default=None, examples=["keys@example.com"])
    password: SecretStr | None = Field(default=None, examples=["${SMTP_PASSWORD}"])
    sender: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+$",
        examples=["keys@example.com"],
        json_schema_extra=expected_extra("an email address"),
    )
    subject: str = Field(
        default="Your order {order_id}",
        json_schema_extra=expected_extra("text that may use {order_id} and {product_id}"),
    )
    timeout: float = Field(default=30.0, gt=0)
    ca_file: str | None = None
    """A CA bundle to trust for the server's certificate (a private CA); the system's store when unset."""


class OutboundWebhookSettings(Model):
    """The seller's own system, for the ``webhook`` delivery channel (signed with Standard Webhooks headers)."""

    url: str = Field(
        examples=["https://seller.example.com/hooks/delivery"], json_schema_extra=expected_extra(_HTTP_URL)
    )
    secret: SecretStr = Field(examples=[WHSEC_EXAMPLE], json_schema_extra=expected_extra(WHSEC_FORM))

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("not an http(s) URL")
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr) -> SecretStr:
        whsec_key(value.get_secret_value())  # its ValueError says what is wrong; the field says what to type
        return value


class ChannelSettings(Model):
    """Where a store's orders are delivered: the marketplace's own API, the buyer's email, or the seller's system."""

    channel: Literal["marketplace", "email", "webhook"] = "marketplace"
    email: SmtpSettings | None = None
    webhook: OutboundWebhookSettings | None = None


class StaffSettings(Model):
    """A staff account of the store's own shop API (Virtual Stores: ``POST /api/auth/login``), used to read orders
    and mark them fulfilled. Give it the Staff role only: nothing else is needed."""

    email: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+$",
        examples=["delivery@example.com"],
        json_schema_extra=expected_extra("the staff account's email address"),
    )
    password: SecretStr = Field(
        examples=["${VIRTUAL_STORES_PASSWORD}"],
        json_schema_extra=expected_extra("the staff account's password, best given as ${ENV_VAR}"),
    )


class StoreSettings(Model):
    """One marketplace account. ``name`` is its webhook path: ``POST /webhooks/{name}``."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        examples=["main"],
        json_schema_extra=expected_extra("letters, digits, _ . - (at most 64, starting with a letter or digit)"),
    )
    marketplace: str = Field(
        examples=["softstore"],
        json_schema_extra=expected_extra(
            "a marketplace adapter: softstore, sellix, shoppy, stripe, stripe-checkout, virtual-stores, "
            "standard-webhooks, lemonsqueezy, polar, paddle, paddle-classic, gumroad or sellauth"
        ),
    )
    api_url: str | None = Field(
        default=None, examples=["https://api.softstore.app/api/v1"], json_schema_extra=expected_extra(_HTTP_URL)
    )
    api_key: SecretStr | None = Field(default=None, examples=["${SOFTSTORE_API_KEY}"])
    webhook_secret: SecretStr | None = Field(
        default=None,
        examples=["${WEBHOOK_SECRET}"],
        json_schema_extra=expected_extra("the marketplace's webhook signing secret, best given as ${ENV_VAR}"),
    )
    seller_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_=.:-]{1,128}$",
        examples=["A-m3CDDC5dlrSdKZp0RFhA=="],
        json_schema_extra=expected_extra("the account's seller id as the marketplace sends it (Gumroad: seller_id)"),
    )
    """The seller account every webhook must name (``gumroad``: the Ping's ``seller_id``); others ignore it."""
    default: ProductSettings | None = None
    products: dict[str, ProductSettings] = Field(default_factory=dict)
    staff: StaffSettings | None = None
    store_id: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,20}$",
        examples=["12345"],
        json_schema_extra=expected_extra(
            "the marketplace's own numeric id of the store (Lemon Squeezy: Settings > Stores)"
        ),
    )
    """The marketplace's id of this store (``lemonsqueezy``: its orders are listed and checked by it)."""
    """The shop's staff login (``virtual-stores``: orders are read from the shop and marked fulfilled there)."""
    signature: SignatureSettings = SignatureSettings()
    delivery: ChannelSettings = ChannelSettings()
    sync_budget: float = Field(default=5.0, gt=0, le=9.5)
    """Seconds a marketplace that waits for the goods in its request (Sellix dynamic products, Paddle Classic
    fulfilment) is given them in."""

    @field_validator("store_id", mode="before")
    @classmethod
    def _numeric_id(cls, value: Any) -> Any:
        # YAML reads `store_id: 12345` as a number; the id is compared as the API's text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("not an http(s) URL")
        return value.rstrip("/") if value else value

    def product(self, product_id: str) -> ProductSettings | None:
        """The product's own settings, else the store-wide default, else None."""
        return self.products.get(product_id, self.default)
