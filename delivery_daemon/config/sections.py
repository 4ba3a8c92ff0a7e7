"""The daemon-wide sections of the configuration: database, server, worker, delivery, admin, retention, security,
logging, plugins, status page, stock sync and shared stock pools (the stores are
:mod:`delivery_daemon.config.stores`)."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from delivery_daemon.config.formatter import Invalid, expected_extra

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Seconds between delivery attempts, modelled on the public Svix schedule (7 retries over about 28 hours)."""


class Model(BaseModel):
    """Base of every section: an unknown key is an error, and settings never change once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(Model):
    url: str = Field(
        default="sqlite:///delivery-daemon.db",
        json_schema_extra=expected_extra("a database URL: sqlite:///FILE or postgresql://USER:PASSWORD@HOST/DATABASE"),
    )
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    busy_timeout_ms: int = Field(default=10_000, ge=0)

    @field_validator("url")
    @classmethod
    def _parseable(cls, value: str) -> str:
        # Checked here so that a typo is a one-line config error, not SQLAlchemy's ArgumentError at start-up.
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError("not a database URL") from None
        return value


class RateLimitSettings(Model):
    per_second: float = Field(gt=0, examples=[10])
    burst: int = Field(default=20, ge=1)


class ServerSettings(Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=256)
    body_timeout: float = Field(default=10.0, gt=0)  # a sender slower than this to send its body gets 408
    header_timeout: float = Field(default=10.0, gt=0)  # ... or its request headers: 408 and the connection closed
    rate_limit: RateLimitSettings | None = None  # per store (each its own bucket); None: unlimited
    store_rate_limits: dict[str, RateLimitSettings] = Field(default_factory=dict)
    # Reverse proxies whose X-Forwarded-For/-Proto are believed, on both servers (webhooks, admin/status page).
    # Empty: no one's; the client is the TCP peer (else anything on loopback could pick its address, e.g. to dodge
    # the status page's per-client login throttle).
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        examples=[["127.0.0.1"]],
        json_schema_extra=expected_extra("a list of IP addresses or networks in CIDR notation"),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        # Normalised ("10.0.0.1" -> "10.0.0.1/32"): uvicorn takes networks, and an entry it cannot parse it would
        # silently compare as text.
        return tuple(str(ipaddress.ip_network(entry, strict=False)) for entry in value)


class WorkerSettings(Model):
    concurrency: int = Field(default=32, ge=1, le=1024)
    lease_seconds: float = Field(default=120.0, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)
    claim_batch: int = Field(default=32, ge=1)
    shutdown_grace: float = Field(default=10.0, ge=0)


class DeliverySettings(Model):
    timeout: float = Field(default=15.0, gt=0)
    retry_schedule: tuple[float, ...] = Field(
        default=DEFAULT_RETRY_SCHEDULE,
        json_schema_extra=expected_extra("a list of waits in seconds, each zero or more"),
    )
    jitter: bool = True

    @field_validator("retry_schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("a delay is negative")
        return value


class AdminSettings(Model):
    """Where ``/metrics`` is served: on the webhook port when ``port`` is unset, else on ``host:port`` apart from it.
    With ``token`` set, ``/metrics`` wants ``Authorization: Bearer <token>``."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    token: SecretStr | None = Field(default=None, examples=["${METRICS_TOKEN}"])


class RetentionSettings(Model):
    """After ``days``, a finished order keeps only its audit row: payload, delivered content and email are purged."""

    days: float | None = Field(default=None, gt=0)
    interval: float = Field(default=3600.0, gt=0)


class SecuritySettings(Model):
    """Encryption at rest and the outbound network policy (see delivery_daemon.storage.cipher and .netguard)."""

    encryption_key_env: str | None = None  # name of an environment variable holding the key lines
    encryption_key_file: str | None = None  # else a 0600 file of key lines; else <database>.key is generated
    allow_private_networks: bool = False  # configured URLs may reach loopback/private/link-local (never metadata)
    allowed_networks: tuple[str, ...] = Field(  # CIDRs configured URLs may reach whatever they are
        default=(), examples=[["127.0.0.0/8"]], json_schema_extra=expected_extra("a list of networks in CIDR notation")
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value


class LoggingSettings(Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class PluginSettings(Model):
    """Where single-file generator plugins live (installed packages are found through entry points)."""

    directory: str | None = None


class StatusSettings(Model):
    """The status page (off by default): served at ``/status/`` on the admin address, behind a password and/or token.

    ``session_secret`` signs the login cookie; when it is not set a random one is made at start, so a restart
    logs everyone out. ``low_stock`` is the number of free keys at or below which a product is highlighted.
    Wrong passwords and bearer tokens are throttled: ``login_failures`` per client address and
    ``login_failures_global`` in all within ``login_window`` seconds, then 429 until the oldest failure ages out.
    """

    enabled: bool = False
    password: SecretStr | None = Field(default=None, examples=["${STATUS_PASSWORD}"])
    token: SecretStr | None = Field(default=None, examples=["${STATUS_TOKEN}"])
    session_secret: SecretStr | None = Field(default=None, examples=["${STATUS_SESSION}"])
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
                    raise Invalid(
                        "no longer supported: the status page is served at /status/ on the admin address, "
                        f"so set admin.{key} instead",
                        f"admin.{key}",
                        "admin: {host: 127.0.0.1, port: 9100}",
                        key=key,
                    )
        return data

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> StatusSettings:
        if (
            self.enabled
            and not (self.password and self.password.get_secret_value())
            and not (self.token and self.token.get_secret_value())
        ):
            raise Invalid(
                "required when the status page is enabled (or set status.token)",
                "a password for the login form, best given as ${ENV_VAR}",
                "${STATUS_PASSWORD}",
                key="password",
            )
        return self


class StockSyncSettings(Model):
    """Keep a product's listed count on the marketplace equal to the keys left in the pool (``stock_sync.py``).

    After deliveries a sync runs at most ``debounce`` seconds after the first one (one call for many orders), and a
    full pass runs every ``interval`` seconds (which also retries failed syncs).
    """

    enabled: bool = True
    debounce: float = Field(default=10.0, ge=0, le=3600)
    interval: float = Field(default=300.0, gt=0)


POOL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""What a pool's name looks like (the same form as a store's name)."""


class PoolSettings(Model):
    """One stock pool shared by products of any store (``pools.<name>``): a product draws on it with
    ``pool: <name>``. ``low_stock_threshold`` logs one ``stock.low`` event (with ``pool``) each time the keys left
    in the pool drop to or below it, whichever store's order took them."""

    low_stock_threshold: int | None = Field(default=None, ge=0, examples=[10])


class WatchdogSettings(Model):
    """The missed-order watchdog (:mod:`delivery_daemon.watchdog`): every ``interval`` seconds, each store whose
    marketplace can list its orders is asked for the paid orders placed since its cursor; an order without a job is
    queued, or raised as missed when the daemon cannot deliver it without the webhook.

    ``lookback`` is how far back a store's first run looks, and the furthest back any run starts. ``settle`` is how
    long an order stays in the listed window after it was placed: an order paid up to ``settle`` seconds after it was
    placed, or dated by a marketplace clock up to that far behind ours, is still found. ``grace`` is how long the
    webhook (and the marketplace's resends of it) has to arrive first: a younger order is left to the next run.
    """

    enabled: bool = True
    interval: float = Field(default=300.0, ge=10, le=86_400)
    lookback: float = Field(default=86_400.0, gt=0, le=90 * 86_400)
    settle: float = Field(default=3_600.0, ge=0, le=7 * 86_400)
    grace: float = Field(default=600.0, ge=0, le=86_400)

    @model_validator(mode="after")
    def _windows_nest(self) -> WatchdogSettings:
        if self.settle > self.lookback:
            raise Invalid(
                "must not be longer than watchdog.lookback", "seconds, at most watchdog.lookback", "3600", key="settle"
            )
        if self.grace > self.settle:
            raise Invalid(
                "must not be longer than watchdog.settle (an order left for later must still be listed then)",
                "seconds, at most watchdog.settle",
                "600",
                key="grace",
            )
        return self
