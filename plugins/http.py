"""``http``: delegate to the seller's own key server over HTTP.

The daemon POSTs the order as JSON (``store``, ``marketplace``, ``order_id``, ``product_id``, ``quantity``,
``buyer_email``, ``idempotency_key``) to ``url`` with an ``Idempotency-Key`` header and, if ``token`` is set,
``Authorization: Bearer <token>``. The answer decides:

* ``200`` with ``{"keys": [...], "text": ..., "download": ...}`` — delivered;
* ``409`` — out of stock: the order waits for a refill;
* ``429`` and ``5xx`` (``Retry-After`` honoured), a timeout or a connection error — retried later;
* any other status — permanent: the order is never delivered.

Revocation (optional, ``revoke_url``): when a content the server made is taken back (refund, dispute, cancellation,
``orders revoke`` or ``orders reissue``), the daemon POSTs the revocation as JSON — ``store``, ``marketplace``,
``order_id``, ``product_id``, ``quantity``, ``buyer_email``, ``keys``, ``reason``, ``sent``, ``issue``,
``idempotency_key`` — to ``revoke_url`` with ``Idempotency-Key: revoke:<idempotency_key>`` and the same token.
``2xx`` = done (never sent again for that content); ``429``/``5xx``/transport errors = retried; anything else =
given up. Without ``revoke_url`` nothing is sent.

Redirects are not followed. Plain ``http://`` is allowed because key servers usually sit on a private network —
but the URL comes from config, so it goes through the daemon's network policy (``resources.policy``): a key server on
a loopback, private, link-local or metadata address must be allowed explicitly with
``security.allow_private_networks: true`` or ``security.allowed_networks: ["10.0.0.0/24"]``. A refused destination is
``Dead`` (permanent) and never contacted.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from delivery_daemon.generators.contract import (
    Dead,
    Generated,
    OrderContext,
    OutOfStock,
    Retry,
    RevocationContext,
    parse_generated,
)
from delivery_daemon.generators.resources import Resources
from delivery_daemon.net.guard import BlockedDestination, guarded_client


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="the key server endpoint, e.g. http://10.0.0.5:9000/keys",
        examples=["http://10.0.0.5:9000/keys"],
        json_schema_extra={"expected": "an http(s) URL"},
    )
    token: SecretStr | None = Field(default=None, examples=["${KEY_SERVER_TOKEN}"])
    timeout: float = Field(default=10.0, gt=0, le=300)
    revoke_url: str | None = Field(
        default=None,
        description="where revocations are POSTed, e.g. http://10.0.0.5:9000/revocations; none: nothing is sent",
        examples=["http://10.0.0.5:9000/revocations"],
        json_schema_extra={"expected": "an http(s) URL"},
    )

    @field_validator("url", "revoke_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = httpx.URL(value)
        except httpx.InvalidURL:
            raise ValueError("must be an http(s) URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("must be an http(s) URL")
        return value


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


class HttpGenerator:
    """Keys from an HTTP key server the seller already runs."""

    name = "http"
    Options = HttpOptions

    def __init__(self, options: HttpOptions, resources: Resources) -> None:
        self.options = options
        self.resources = resources

    def destinations(self) -> dict[str, str]:
        """The key server URLs by option key: checked against the network policy at start-up."""
        urls = {"url": self.options.url}
        if self.options.revoke_url is not None:
            urls["revoke_url"] = self.options.revoke_url
        return urls

    async def _post(self, url: str, data: dict[str, Any], idempotency: str, order_id: str) -> httpx.Response:
        """POST ``data`` to ``url`` (the token and ``Idempotency-Key`` set); Dead for a refused destination, Retry
        for a transport failure (the reason never names the URL or the token)."""
        headers = {"Idempotency-Key": idempotency}
        if self.options.token is not None:
            headers["Authorization"] = f"Bearer {self.options.token.get_secret_value()}"
        try:
            async with guarded_client(self.resources.policy, timeout=self.options.timeout) as client:
                return await client.post(url, json=data, headers=headers)
        except BlockedDestination as exc:  # refused before connecting: only a config change can help
            self.resources.log.warning("security.destination_refused", order_id=order_id, reason=str(exc))
            raise Dead(f"key server not contacted: {exc}") from None
        except httpx.HTTPError as exc:
            raise Retry(f"key server unreachable ({type(exc).__name__})") from None

    async def revoke(self, revocation: RevocationContext) -> None:
        """POST the revocation to ``revoke_url`` (see the module docstring); nothing without it."""
        if self.options.revoke_url is None:
            return
        response = await self._post(
            self.options.revoke_url,
            revocation.to_dict(),
            f"revoke:{revocation.idempotency_key}",
            revocation.order_id,
        )
        status = response.status_code
        if status == 429 or status >= 500:
            raise Retry(f"key server answered {status}", after=_retry_after(response), http_status=status)
        if not 200 <= status < 300:
            raise Dead(f"key server refused the revocation ({status})", http_status=status)

    async def generate(self, order: OrderContext) -> Generated:
        response = await self._post(self.options.url, order.to_dict(), order.idempotency_key, order.order_id)
        status = response.status_code
        if status == 409:
            raise OutOfStock("key server is out of stock (409)")
        if status == 429 or status >= 500:
            raise Retry(f"key server answered {status}", after=_retry_after(response), http_status=status)
        if status != 200:
            raise Dead(f"key server refused the order ({status})", http_status=status)
        try:
            return parse_generated(response.json())
        except (ValueError, json.JSONDecodeError) as exc:
            raise Retry(f"key server answered unusable JSON: {exc}", http_status=status) from None
