"""Configuration: read once, at the edge, from YAML; everything else gets plain values passed in.

``load_settings(path)`` resolves ``${ENV_VAR}`` references, validates the document and returns :class:`Settings`.
Any problem becomes a :class:`~delivery_daemon.errors.ConfigError` whose message is one line naming the key path,
e.g. ``stores[0].api_key: required``. Secrets are held as :class:`pydantic.SecretStr` so they never print.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from delivery_daemon.errors import ConfigError

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Seconds between delivery attempts, modelled on the public Svix schedule (7 retries over about 28 hours)."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Model):
    url: str = "sqlite:///delivery-daemon.db"
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    busy_timeout_ms: int = Field(default=10_000, ge=0)

    @field_validator("url")
    @classmethod
    def _parseable(cls, value: str) -> str:
        # Checked here so that a typo is a one-line config error, not SQLAlchemy's ArgumentError at start-up.
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL (e.g. sqlite:///delivery-daemon.db)") from None
        return value


class RateLimitSettings(_Model):
    per_second: float = Field(gt=0)
    burst: int = Field(default=20, ge=1)


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=256)
    body_timeout: float = Field(default=10.0, gt=0)  # a sender slower than this to send its body gets 408
    header_timeout: float = Field(default=10.0, gt=0)  # ... or its request headers: 408 and the connection closed
    rate_limit: RateLimitSettings | None = None  # per store (each its own bucket); None: unlimited
    store_rate_limits: dict[str, RateLimitSettings] = Field(default_factory=dict)


class WorkerSettings(_Model):
    concurrency: int = Field(default=32, ge=1, le=1024)
    lease_seconds: float = Field(default=120.0, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)
    claim_batch: int = Field(default=32, ge=1)
    shutdown_grace: float = Field(default=10.0, ge=0)


class DeliverySettings(_Model):
    timeout: float = Field(default=15.0, gt=0)
    retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    jitter: bool = True

    @field_validator("retry_schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("delays must be zero or more seconds")
        return value


class AdminSettings(_Model):
    """Where ``/metrics`` is served: on the webhook port when ``port`` is unset, else on ``host:port`` apart from it.
    With ``token`` set, ``/metrics`` wants ``Authorization: Bearer <token>``."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    token: SecretStr | None = None


class RetentionSettings(_Model):
    """After ``days``, a finished order keeps only its audit row: payload, delivered content and email are purged."""

    days: float | None = Field(default=None, gt=0)
    interval: float = Field(default=3600.0, gt=0)
class SecuritySettings(_Model):
    """Encryption at rest and the outbound network policy (see delivery_daemon.storage.cipher and .netguard)."""

    encryption_key_env: str | None = None  # name of an environment variable holding the key lines
    encryption_key_file: str | None = None  # else a 0600 file of key lines; else <database>.key is generated
    allow_private_networks: bool = False  # configured URLs may reach loopback/private/link-local (never metadata)
    allowed_networks: tuple[str, ...] = ()  # CIDRs configured URLs may reach whatever they are

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value


class LoggingSettings(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class PluginSettings(_Model):
    """Where single-file generator plugins live (installed packages are found through entry points)."""

    directory: str | None = None
class StatusSettings(_Model):
    """The status page (off by default): served at ``/status/`` on the admin address, behind a password and/or token.

    ``session_secret`` signs the login cookie; when it is not set a random one is made at start, so a restart
    logs everyone out. ``low_stock`` is the number of free keys at or below which a product is highlighted.
    Wrong passwords and bearer tokens are throttled: ``login_failures`` per client address and
    ``login_failures_global`` in all within ``login_window`` seconds, then 429 until the oldest failure ages out.
    """

    enabled: bool = False
    password: SecretStr | None = None
    token: SecretStr | None = None
    session_secret: SecretStr | None = None
    session_max_age: int = Field(default=8 * 3600, ge=60)
    low_stock: int = Field(default=10, ge=0)
    login_failures: int = Field(default=5, ge=1)
    login_failures_global: int = Field(default=25, ge=1)
    login_window: float = Field(default=900.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_own_address(cls, data: Any) -> Any:
        # The page once had its own server; say where it went instead of a bare "unknown key".
        if isinstance(data, dict):
            for key in ("host", "port"):
                if key in data:
                    raise ValueError(f"status.{key}: no longer supported; the status page is served at /status/ "
                                     f"on the admin address, so set admin.{key} instead")
        return data

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> StatusSettings:
        if self.enabled and not (self.password and self.password.get_secret_value()) and not (
            self.token and self.token.get_secret_value()
        ):
            raise ValueError("status.password: required when the status page is enabled (or set status.token)")
        return self


class StockSyncSettings(_Model):
    """Keep a product's listed count on the marketplace equal to the keys left in the pool (``stock_sync.py``).

    After deliveries a sync runs at most ``debounce`` seconds after the first one (one call for many orders), and a
    full pass runs every ``interval`` seconds (which also retries failed syncs).
    """

    enabled: bool = True
    debounce: float = Field(default=10.0, ge=0, le=3600)
    interval: float = Field(default=300.0, gt=0)


class ProductSettings(_Model):
    """How one product is fulfilled: a generator, its options and the delivery text template.

    ``listed_count`` is the stock count to show on the marketplace for a product whose generator is unlimited
    (stock sync leaves such products alone unless it is set); for a ``stock`` product it replaces the pool's count.
    """

    generator: str
    options: dict[str, Any] = Field(default_factory=dict)
    template: str = "{keys_lines}"
    listed_count: int | None = Field(default=None, ge=0)


class SignatureSettings(_Model):
    """How a store's inbound webhooks are signed, where the marketplace's document leaves it open.

    Each adapter documents its defaults; a field left unset keeps them.
    """

    header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,64}$")
    algorithm: Literal["sha256", "sha512"] | None = None
    tolerance: float = Field(default=300.0, gt=0, le=86_400)
    """Seconds a timestamped signature may be old (or ahead of our clock)."""


class SmtpSettings(_Model):
    """The seller's own SMTP server, for the ``email`` delivery channel."""

    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    subject: str = "Your order {order_id}"
    timeout: float = Field(default=30.0, gt=0)
    ca_file: str | None = None
    """A CA bundle to trust for the server's certificate (a private CA); the system's store when unset."""


class OutboundWebhookSettings(_Model):
    """The seller's own system, for the ``webhook`` delivery channel (signed with Standard Webhooks headers)."""

    url: str
    secret: SecretStr

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL")
        return value


class ChannelSettings(_Model):
    """Where a store's orders are delivered: the marketplace's own API, the buyer's email, or the seller's system."""

    channel: Literal["marketplace", "email", "webhook"] = "marketplace"
    email: SmtpSettings | None = None
    webhook: OutboundWebhookSettings | None = None


class StoreSettings(_Model):
    """One marketplace account. ``name`` is its webhook path: ``POST /webhooks/{name}``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    marketplace: str
    api_url: str | None = None
    api_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    default: ProductSettings | None = None
    products: dict[str, ProductSettings] = Field(default_factory=dict)
    signature: SignatureSettings = SignatureSettings()
    delivery: ChannelSettings = ChannelSettings()
    sync_budget: float = Field(default=5.0, gt=0, le=9.5)
    """Seconds a marketplace that waits for the goods in its request (Sellix dynamic products) is given them in."""

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/") if value else value

    def product(self, product_id: str) -> ProductSettings | None:
        """The product's own settings, else the store-wide default, else None."""
        return self.products.get(product_id, self.default)


class Settings(_Model):
    database: DatabaseSettings = DatabaseSettings()
    server: ServerSettings = ServerSettings()
    worker: WorkerSettings = WorkerSettings()
    delivery: DeliverySettings = DeliverySettings()
    logging: LoggingSettings = LoggingSettings()
    admin: AdminSettings = AdminSettings()
    retention: RetentionSettings = RetentionSettings()
    plugins: PluginSettings = PluginSettings()
    security: SecuritySettings = SecuritySettings()
    status: StatusSettings = StatusSettings()
    stock_sync: StockSyncSettings = StockSyncSettings()
    stores: tuple[StoreSettings, ...] = ()

    @model_validator(mode="after")
    def _status_needs_admin_address(self) -> Settings:
        if self.status.enabled and self.admin.port is None:
            raise ValueError("admin.port: required when status.enabled is true (the status page is served on the "
                             "admin address, never on the public webhook port)")
        return self

    @model_validator(mode="after")
    def _unique_store_names(self) -> Settings:
        seen: set[str] = set()
        for index, store in enumerate(self.stores):
            if store.name in seen:
                raise ValueError(f"stores[{index}].name: duplicate store name {store.name!r}")
            seen.add(store.name)
        return self

    def store(self, name: str) -> StoreSettings | None:
        return next((store for store in self.stores if store.name == name), None)


def format_location(loc: tuple[int | str, ...]) -> str:
    """``("stores", 0, "api_key")`` → ``stores[0].api_key``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _first_error(exc: ValidationError) -> ConfigError:
    error = exc.errors()[0]
    message = "required" if error["type"] == "missing" else str(error["msg"])
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    path = format_location(tuple(error["loc"]))
    if ": " in message and message.split(": ", 1)[0].startswith(("stores[", "status.", "admin.")):
        path, message = message.split(": ", 1)
    return ConfigError(path, message)


def resolve_env(value: Any, environ: dict[str, str] | os._Environ[str], path: str = "") -> Any:
    """Replace ``${NAME}`` in every string of a parsed document; a missing variable is a ConfigError."""
    if isinstance(value, dict):
        return {k: resolve_env(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(path, f"environment variable {name} is not set")
            return environ[name]

        return _ENV_REF.sub(substitute, value)
    return value


def parse_settings(document: Any, environ: dict[str, str] | os._Environ[str] | None = None) -> Settings:
    """Validate an already-parsed document (a dict) into Settings."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError("", "the configuration must be a mapping of keys")
    resolved = resolve_env(document, os.environ if environ is None else environ)
    try:
        return Settings.model_validate(resolved)
    except ValidationError as exc:
        raise _first_error(exc) from None


def load_settings(path: str | Path, environ: dict[str, str] | os._Environ[str] | None = None) -> Settings:
    """Read, resolve and validate a YAML configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError("", f"{path}: {problem}{where}") from None
    return parse_settings(document, environ)
