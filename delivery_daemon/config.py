"""Configuration: read once, at the edge, from YAML; everything else gets plain values passed in.

``load_settings(path)`` resolves ``${ENV_VAR}`` references, validates the document and returns :class:`Settings`.
Any problem becomes a :class:`~delivery_daemon.errors.ConfigError` whose message is one line naming the key path,
e.g. ``stores[0].api_key: required``. Secrets are held as :class:`pydantic.SecretStr` so they never print.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .errors import ConfigError

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Seconds between delivery attempts, modelled on the public Svix schedule (7 retries over about 28 hours)."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Model):
    url: str = "sqlite:///delivery-daemon.db"
    synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    busy_timeout_ms: int = Field(default=10_000, ge=0)


class ServerSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=256)


class WorkerSettings(_Model):
    concurrency: int = Field(default=16, ge=1, le=1024)
    lease_seconds: float = Field(default=120.0, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)
    claim_batch: int = Field(default=32, ge=1)


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


class LoggingSettings(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class StatusSettings(_Model):
    """The status page (off by default): its own address, behind a password and/or a token.

    ``session_secret`` signs the login cookie; when it is not set a random one is made at start, so a restart
    logs everyone out. ``low_stock`` is the number of free keys at or below which a product is highlighted.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)
    password: SecretStr | None = None
    token: SecretStr | None = None
    session_secret: SecretStr | None = None
    session_max_age: int = Field(default=8 * 3600, ge=60)
    low_stock: int = Field(default=10, ge=0)

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> StatusSettings:
        if self.enabled and not (self.password and self.password.get_secret_value()) and not (
            self.token and self.token.get_secret_value()
        ):
            raise ValueError("status.password: required when the status page is enabled (or set status.token)")
        return self


class ProductSettings(_Model):
    """How one product is fulfilled: a generator, its options and the delivery text template."""

    generator: str
    options: dict[str, Any] = Field(default_factory=dict)
    template: str = "{keys_lines}"


class StoreSettings(_Model):
    """One marketplace account. ``name`` is its webhook path: ``POST /webhooks/{name}``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    marketplace: str
    api_url: str | None = None
    api_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    default: ProductSettings | None = None
    products: dict[str, ProductSettings] = Field(default_factory=dict)

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
    status: StatusSettings = StatusSettings()
    stores: tuple[StoreSettings, ...] = ()

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
    if ": " in message and message.split(": ", 1)[0].startswith(("stores[", "status.")):
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
