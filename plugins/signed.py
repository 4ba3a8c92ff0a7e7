"""``signed``: licence keys an application can verify offline with the seller's Ed25519 public key.

Each of the order's ``quantity`` keys carries the product, order, seat index, issued-at time and optional expiry
(format: :mod:`delivery_daemon.generators.licence`). Create the key pair with ``delivery-daemon keys generate``;
check a key with ``delivery-daemon license verify KEY --public-key FILE [--revocations LIST]``.

``revocation_list()`` (the contract's hook): the daemon publishes, at ``GET /revocations/{store}/{product}``, the
product's revoked licences (refunded, disputed, cancelled, revoked or re-issued orders) signed with the same key, so
a seller's application can refuse them (format: :func:`delivery_daemon.generators.licence.sign_revocations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from delivery_daemon.generators.contract import Generated, OrderContext, Resources
from delivery_daemon.generators.licence import (
    LicenseError,
    LicensePayload,
    load_private_key,
    sign,
    sign_revocations,
)


class SignedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    private_key_file: str = Field(
        description="PEM file written by `delivery-daemon keys generate`",
        examples=["/etc/delivery-daemon/signing.pem"],
        json_schema_extra={"expected": "the PEM private key file `delivery-daemon keys generate` wrote"},
    )
    expires_days: int | None = Field(default=None, ge=1, le=36500)

    @field_validator("private_key_file")
    @classmethod
    def _loadable(cls, value: str) -> str:
        # Checked at start-up so a missing or wrong key is a config error, not a failed delivery.
        try:
            load_private_key(Path(value))
        except LicenseError as exc:
            raise ValueError(str(exc)) from None
        return value


class SignedGenerator:
    """Ed25519-signed licence keys, one per seat."""

    name = "signed"
    Options = SignedOptions

    def __init__(self, options: SignedOptions, resources: Resources) -> None:
        self.private = load_private_key(options.private_key_file)
        self.expires_days = options.expires_days
        self.clock = resources.clock

    def revocation_list(self, product_id: str, key_hashes: Sequence[str]) -> str:
        """The signed list of ``key_hashes`` (revoked licences of ``product_id``), issued now."""
        return sign_revocations(product_id, key_hashes, int(self.clock.now()), self.private)

    def generate(self, order: OrderContext) -> Generated:
        issued = int(self.clock.now())
        expires = issued + self.expires_days * 86400 if self.expires_days else None
        return Generated(
            keys=[
                sign(
                    LicensePayload(
                        product=order.product_id,
                        order=order.order_id,
                        index=seat,
                        quantity=order.quantity,
                        issued_at=issued,
                        expires_at=expires,
                    ),
                    self.private,
                )
                for seat in range(1, order.quantity + 1)
            ]
        )
