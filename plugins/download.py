"""``download``: a file product. The buyer receives an HTTPS link — either a static ``url``, or a time-limited link
to ``file`` under ``base_url`` signed with HMAC-SHA256 (like a presigned URL)::

    {base_url}/{file}?order={order_id}&expires={epoch seconds}&signature={hex}

``signature`` is ``HMAC-SHA256(secret, "{file}\\n{order_id}\\n{expires}")``; the seller's file server checks it with
:func:`verify_link` (or the same three lines in any language) before serving the file. No keys are delivered; the
default delivery text is :attr:`DownloadGenerator.template`.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from delivery_daemon.generators.contract import Generated, OrderContext, Resources


def _https(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("must be an https:// URL")
    return value


def link_signature(secret: str, file: str, order_id: str, expires: int) -> str:
    message = f"{file}\n{order_id}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_link(url: str, secret: str, *, now: float) -> bool:
    """True when ``url`` was signed with ``secret`` and has not expired (for the seller's file server)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    try:
        expires = int(query["expires"])
        order_id, signature = query["order"], query["signature"]
    except (KeyError, ValueError):
        return False
    file = parts.path.rsplit("/", 1)[-1]
    expected = link_signature(secret, file, order_id, expires)
    return hmac.compare_digest(expected, signature) and now < expires


class DownloadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Field order matters: each validator sees the fields declared above it.
    url: str | None = Field(
        default=None,
        description="a static HTTPS link (no signing)",
        examples=["https://files.example.com/setup.zip"],
        json_schema_extra={"expected": "an https:// URL"},
    )
    base_url: str | None = Field(
        default=None,
        validate_default=True,
        description="HTTPS folder of signed links, e.g. https://files.example.com/dl",
        examples=["https://files.example.com/dl"],
        json_schema_extra={"expected": "an https:// URL of a folder"},
    )
    file: str | None = Field(
        default=None,
        validate_default=True,
        pattern=r"^[A-Za-z0-9._-]+$",
        examples=["setup-2.1.zip"],
        json_schema_extra={"expected": "a file name: letters, digits, . _ -"},
    )
    secret: SecretStr | None = Field(
        default=None,
        validate_default=True,
        examples=["${DOWNLOAD_LINK_SECRET}"],
        json_schema_extra={"expected": "a secret of at least 16 characters, best given as ${ENV_VAR}"},
    )
    ttl_seconds: int = Field(default=7 * 86400, ge=60)

    @field_validator("url")
    @classmethod
    def _static(cls, value: str | None) -> str | None:
        return None if value is None else _https(value)

    @field_validator("base_url")
    @classmethod
    def _signed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if (value is None) == (info.data.get("url") is None):
            raise ValueError("set either url (a static link) or base_url (signed links)")
        return None if value is None else _https(value).rstrip("/")

    @field_validator("file")
    @classmethod
    def _file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("base_url") is not None:
            raise ValueError("required with base_url")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if info.data.get("base_url") is not None and (value is None or len(value.get_secret_value()) < 16):
            raise ValueError("required with base_url: at least 16 characters")
        return value


class DownloadGenerator:
    """A download link per order (a static one, or a signed one that expires)."""

    name = "download"
    Options = DownloadOptions
    template = "Your download (order {order_id}): {download}"

    def __init__(self, options: DownloadOptions, resources: Resources) -> None:
        self.options = options
        self.clock = resources.clock

    def link(self, order_id: str) -> str:
        options = self.options
        if options.url is not None:
            return options.url
        assert options.base_url is not None and options.file is not None and options.secret is not None
        expires = int(self.clock.now()) + options.ttl_seconds
        signature = link_signature(options.secret.get_secret_value(), options.file, order_id, expires)
        query = urlencode({"order": order_id, "expires": expires, "signature": signature})
        return f"{options.base_url}/{quote(options.file)}?{query}"

    def generate(self, order: OrderContext) -> Generated:
        return Generated(keys=[], download=self.link(order.order_id))
