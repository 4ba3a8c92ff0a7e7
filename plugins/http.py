"""``http``: delegate to the seller's own key server over HTTP.

The daemon POSTs the order as JSON (``store``, ``marketplace``, ``order_id``, ``product_id``, ``quantity``,
``buyer_email``, ``idempotency_key``) to ``url`` with an ``Idempotency-Key`` header and, if ``token`` is set,
``Authorization: Bearer <token>``. The answer decides:

* ``200`` with ``{"keys": [...], "text": ..., "download": ...}`` — delivered;
* ``409`` — out of stock: the order waits for a refill;
* ``429`` and ``5xx`` (``Retry-After`` honoured), a timeout or a connection error — retried later;
* any other status — permanent: the order is never delivered.

Redirects are not followed. Plain ``http://`` is allowed because key servers usually sit on a private network —
but the URL comes from config, so it goes through the daemon's network policy (``resources.policy``): a key server on
a loopback, private, link-local or metadata address must be allowed explicitly with
``security.allow_private_networks: true`` or ``security.allowed_networks: ["10.0.0.0/24"]``. A refused destination is
``Dead`` (permanent) and never contacted.
"""

from __future__ import annotations

import json

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from delivery_daemon.generators.contract import Dead, Generated, OrderContext, OutOfStock, Retry, parse_generated
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

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
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
        """The key server URL by option key: checked against the network policy at start-up."""
        return {"url": self.options.url}

    async def generate(self, order: OrderContext) -> Generated:
        headers = {"Idempotency-Key": order.idempotency_key}
        if self.options.token is not None:
            headers["Authorization"] = f"Bearer {self.options.token.get_secret_value()}"
        try:
            async with guarded_client(self.resources.policy, timeout=self.options.timeout) as client:
                response = await client.post(self.options.url, json=order.to_dict(), headers=headers)
        except BlockedDestination as exc:  # refused before connecting: only a config change can help
            self.resources.log.warning("security.destination_refused", order_id=order.order_id, reason=str(exc))
            raise Dead(f"key server not contacted: {exc}") from None
        except httpx.HTTPError as exc:  # the reason names the failure, never the URL or the token
            raise Retry(f"key server unreachable ({type(exc).__name__})") from None
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
