"""The Python peer of ``bench/versus.py``: the SoftStore seed's Recommended Flow as a hand-written Starlette + httpx
handler, inline and storing nothing, as a seller would write it without the daemon.

Validate the documented signature, verify the order with ``GET /orders/info/{id}``, generate the key, ``POST`` it
to the delivery URL, answer 200 (500 when any step fails: the marketplace resends). The JWT is fetched once and
renewed on a 401, and one keep-alive client is shared, as in the Express peer (``bench/peers/express/server.js``):
both peers are as strong as a careful seller would write them. Run by ``python -m bench.serve inline SPEC``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _licence_key() -> str:
    groups = ("".join(secrets.choice(ALPHABET) for _ in range(5)) for _ in range(4))
    return "-".join(groups)


def inline_app(spec: dict[str, Any]) -> Starlette:
    """The handler for ``spec["api_key"]`` and ``spec["api_base"]`` (…/api/v1); logs one line per call to
    ``spec["log_file"]``, as the Express peer's ``console.log`` does."""
    api_key: str = spec["api_key"]
    api_base: str = spec["api_base"]
    hashed_key = hashlib.sha1(api_key.encode()).hexdigest()  # noqa: S324  (SoftStore's documented signature scheme)
    log = logging.getLogger("inline")
    handler = logging.FileHandler(spec.get("log_file", "/dev/null"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64))
    jwt: list[str] = []  # the cached token: empty until the first call

    async def call(method: str, url: str, body: dict[str, Any] | None = None) -> httpx.Response:
        for renew in (False, True):
            if renew or not jwt:
                auth = await client.post(f"{api_base}/auth/api-key/create", headers={"X-API-KEY": api_key})
                auth.raise_for_status()
                answered = auth.json()  # the API reference: {access_token, expires_in}; the seed's sample: data.…
                jwt[:] = [answered.get("access_token") or answered["data"]["access_token"]]
            answer = await client.request(method, url, json=body, headers={"Authorization": f"Bearer {jwt[0]}"})
            if answer.status_code != 401:
                answer.raise_for_status()
                return answer
        raise httpx.HTTPStatusError("the API refused a fresh JWT", request=answer.request, response=answer)

    async def webhook(request: Request) -> Response:
        payload = json.loads(await request.body())
        order_id = str(payload.get("id_order", ""))
        expected = hashlib.sha1((hashed_key + order_id).encode()).hexdigest()  # noqa: S324  (the documented SoftStore signature)
        if not hmac.compare_digest(expected, str(payload.get("signature", ""))):
            return PlainTextResponse("Invalid signature", status_code=403)
        try:
            info = await call("GET", f"{api_base}/orders/info/{order_id}")
            log.info("%s", info.text)
            keys = [_licence_key() for _ in range(int(info.json()["data"].get("count") or 1))]
            text = f"Thank you for order {order_id}:\n" + "\n".join(keys)
            answer = await call("POST", f"{api_base}/orders/delivery/{payload['token']}", {"text": text})
            log.info("%s", answer.text)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            log.error("delivery failed: %s", type(exc).__name__)
            return PlainTextResponse("Delivery error", status_code=500)
        return PlainTextResponse("Delivered")

    return Starlette(routes=[Route("/webhook", webhook, methods=["POST"])])
