"""Configuration: read once, at the edge, from YAML; everything else gets plain values passed in.

``load_settings(path)`` resolves ``${ENV_VAR}`` references, validates the document and returns :class:`Settings`.
Any problem becomes a :class:`~delivery_daemon.errors.ConfigError` whose message is one line naming the key path,
what is wrong and what to type instead, e.g. ``stores[0].api_key: required; expected a secret, best given as
${ENV_VAR}, e.g. ${SOFTSTORE_API_KEY}``. One formatter (:func:`config_error`) makes that line for every pydantic
error, here and for plugin options: the expected form comes from the field's type and constraints (or its
``json_schema_extra={"expected": ...}``), the example from its ``examples``, else its default. Secrets are held as
:class:`pydantic.SecretStr` so they never print, and a value is never echoed into an error when it is a secret or
came from ``${...}``.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import os
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from delivery_daemon.errors import ConfigError, DeliveryDaemonError

DEFAULT_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""Seconds between delivery attempts, modelled on the public Svix schedule (7 retries over about 28 hours)."""

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_START = "${"
_HTTP_URL = "an http(s) URL"


def _expect(expected: str) -> dict[str, Any]:
    """``json_schema_extra`` for a field whose expected form its type does not say (read by :func:`config_error`)."""
    return {"expected": expected}


class Invalid(DeliveryDaemonError, ValueError):
    """A validator's complaint that knows what it wanted. ``key`` (relative to where the validator runs) names the
    key at fault when a whole section is checked; ``expected``/``example`` override the field's own."""

    def __init__(self, problem: str, expected: str | None = None, example: str | None = None, key: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.expected = expected
        self.example = example
        self.key = key


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Model):
    url: str = Field(default="sqlite:///delivery-daemon.db", json_schema_extra=_expect(
        "a database URL: sqlite:///FILE or postgresql://USER:PASSWORD@HOST/DATABASE"))
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


class RateLimitSettings(_Model):
    per_second: float = Field(gt=0, examples=[10])
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
    retry_schedule: tuple[float, ...] = Field(default=DEFAULT_RETRY_SCHEDULE, json_schema_extra=_expect(
        "a list of waits in seconds, each zero or more"))
    jitter: bool = True

    @field_validator("retry_schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("a delay is negative")
        return value


class AdminSettings(_Model):
    """Where ``/metrics`` is served: on the webhook port when ``port`` is unset, else on ``host:port`` apart from it.
    With ``token`` set, ``/metrics`` wants ``Authorization: Bearer <token>``."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    token: SecretStr | None = Field(default=None, examples=["${METRICS_TOKEN}"])


class RetentionSettings(_Model):
    """After ``days``, a finished order keeps only its audit row: payload, delivered content and email are purged."""

    days: float | None = Field(default=None, gt=0)
    interval: float = Field(default=3600.0, gt=0)
class SecuritySettings(_Model):
    """Encryption at rest and the outbound network policy (see delivery_daemon.storage.cipher and .netguard)."""

    encryption_key_env: str | None = None  # name of an environment variable holding the key lines
    encryption_key_file: str | None = None  # else a 0600 file of key lines; else <database>.key is generated
    allow_private_networks: bool = False  # configured URLs may reach loopback/private/link-local (never metadata)
    allowed_networks: tuple[str, ...] = Field(  # CIDRs configured URLs may reach whatever they are
        default=(), examples=[["127.0.0.0/8"]], json_schema_extra=_expect("a list of networks in CIDR notation"))

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
                    raise Invalid("no longer supported: the status page is served at /status/ on the admin address, "
                                  f"so set admin.{key} instead", f"admin.{key}", "admin: {host: 127.0.0.1, port: 9100}",
                                  key=key)
        return data

    @model_validator(mode="after")
    def _secret_when_enabled(self) -> StatusSettings:
        if self.enabled and not (self.password and self.password.get_secret_value()) and not (
            self.token and self.token.get_secret_value()
        ):
            raise Invalid("required when the status page is enabled (or set status.token)",
                          "a password for the login form, best given as ${ENV_VAR}", "${STATUS_PASSWORD}",
                          key="password")
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

    generator: str = Field(examples=["pattern"], json_schema_extra=_expect(
        "the name of a generator plugin (shipped: pattern, stock, signed, download, command, http)"))
    options: dict[str, Any] = Field(default_factory=dict)
    template: str = Field(default="{keys_lines}", json_schema_extra=_expect(
        "text with the fields {keys}, {keys_lines}, {order_id}, {product_id}, {quantity}, {download}, {text}"))
    listed_count: int | None = Field(default=None, ge=0)


class SignatureSettings(_Model):
    """How a store's inbound webhooks are signed, where the marketplace's document leaves it open.

    Each adapter documents its defaults; a field left unset keeps them.
    """

    header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,64}$", examples=["X-Shoppy-Signature"],
                               json_schema_extra=_expect("an HTTP header name: letters, digits and -"))
    algorithm: Literal["sha256", "sha512"] | None = None
    tolerance: float = Field(default=300.0, gt=0, le=86_400)
    """Seconds a timestamped signature may be old (or ahead of our clock)."""


class SmtpSettings(_Model):
    """The seller's own SMTP server, for the ``email`` delivery channel."""

    host: str = Field(min_length=1, examples=["smtp.example.com"])
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = Field(default=None, examples=["keys@example.com"])
    password: SecretStr | None = Field(default=None, examples=["${SMTP_PASSWORD}"])
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", examples=["keys@example.com"],
                        json_schema_extra=_expect("an email address"))
    subject: str = Field(default="Your order {order_id}", json_schema_extra=_expect(
        "text that may use {order_id} and {product_id}"))
    timeout: float = Field(default=30.0, gt=0)
    ca_file: str | None = None
    """A CA bundle to trust for the server's certificate (a private CA); the system's store when unset."""


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


class OutboundWebhookSettings(_Model):
    """The seller's own system, for the ``webhook`` delivery channel (signed with Standard Webhooks headers)."""

    url: str = Field(examples=["https://seller.example.com/hooks/delivery"], json_schema_extra=_expect(_HTTP_URL))
    secret: SecretStr = Field(examples=[WHSEC_EXAMPLE], json_schema_extra=_expect(WHSEC_FORM))

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


class ChannelSettings(_Model):
    """Where a store's orders are delivered: the marketplace's own API, the buyer's email, or the seller's system."""

    channel: Literal["marketplace", "email", "webhook"] = "marketplace"
    email: SmtpSettings | None = None
    webhook: OutboundWebhookSettings | None = None


class StoreSettings(_Model):
    """One marketplace account. ``name`` is its webhook path: ``POST /webhooks/{name}``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", examples=["main"], json_schema_extra=_expect(
        "letters, digits, _ . - (at most 64, starting with a letter or digit)"))
    marketplace: str = Field(examples=["softstore"], json_schema_extra=_expect(
        "a marketplace adapter: softstore, sellix, shoppy, stripe or standard-webhooks"))
    api_url: str | None = Field(default=None, examples=["https://api.softstore.app/api/v1"],
                                json_schema_extra=_expect(_HTTP_URL))
    api_key: SecretStr | None = Field(default=None, examples=["${SOFTSTORE_API_KEY}"])
    webhook_secret: SecretStr | None = Field(default=None, examples=["${WEBHOOK_SECRET}"], json_schema_extra=_expect(
        "the marketplace's webhook signing secret, best given as ${ENV_VAR}"))
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
            raise ValueError("not an http(s) URL")
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
            raise Invalid("required when status.enabled is true (the status page is served on the admin address, "
                          "never on the public webhook port)", "a port other than server.port", "9100",
                          key="admin.port")
        return self

    @model_validator(mode="after")
    def _unique_store_names(self) -> Settings:
        seen: set[str] = set()
        for index, store in enumerate(self.stores):
            if store.name in seen:
                raise Invalid(f"duplicate store name {store.name!r}", "a name not used by another store",
                              f"{store.name}-2", key=f"stores[{index}].name")
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


def _join(prefix: str, path: str) -> str:
    if not prefix or not path:
        return prefix or path
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` → ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType) and len(members := [
                a for a in get_args(annotation) if a is not type(None)]) == 1:
            annotation = members[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _spot(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[Any, FieldInfo | None, str, Any]:
    """What the value at ``loc`` should be: ``(annotation, field when loc ends at a model field, key, parent model)``.
    An unknown key gives annotation None and the model it was found in."""
    annotation: Any = model
    field: FieldInfo | None = None
    key, parent = "", None
    for part in loc:
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if _is_model(annotation) and isinstance(part, str):
            parent, key, field = annotation, part, annotation.model_fields.get(part)
            if field is None:
                return None, None, key, parent
            annotation = field.annotation
        elif origin is dict and isinstance(part, str):
            annotation, field = get_args(annotation)[1], None
        elif origin in (list, tuple, set, frozenset) and isinstance(part, int):
            annotation, field = get_args(annotation)[0], None
        elif origin in (Union, types.UnionType):
            continue  # pydantic's tag for one member of a union: the union as a whole is expected
        else:
            return Any, None, key, parent
    return annotation, field, key, parent


def _limits(field: FieldInfo | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in field.metadata if field is not None else ():
        for name in ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern"):
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _render(value: Any) -> str:
    """A value as it would be typed in the YAML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_render(v)}" for k, v in value.items()) + "}"
    return str(value) if value != "" else '""'


def _bounds(limits: dict[str, Any]) -> str:
    if "ge" in limits and "le" in limits:
        return f" from {_render(limits['ge'])} to {_render(limits['le'])}"
    words = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
    said = [f"{word} {_render(limits[name])}" for name, word in words.items() if name in limits]
    return (" " + " and ".join(said)) if said else ""


def _form_of(annotation: Any, field: FieldInfo | None = None) -> str:
    """The expected form of a value of ``annotation`` (with the field's constraints), in words."""
    annotation = _unwrap(annotation)
    origin, limits = get_origin(annotation), _limits(field)
    if origin is Literal:
        return "one of " + ", ".join(_render(choice) for choice in get_args(annotation))
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number" + _bounds(limits)
    if annotation is float:
        return "a number" + _bounds(limits)
    if annotation in (SecretStr, SecretBytes):
        return "a secret, best given as ${ENV_VAR}"
    if annotation is str:
        if "pattern" in limits:
            return f"text matching {limits['pattern']}"
        if limits.get("min_length") == 1:
            return "text (not empty)"
        if limits.get("min_length"):
            return f"text of at least {limits['min_length']} characters"
        return "text" + (f" of at most {limits['max_length']} characters" if "max_length" in limits else "")
    if _is_model(annotation):
        required = [name for name, info in annotation.model_fields.items() if info.is_required()]
        return "a mapping" + (f" with {' and '.join(required)} set" if required else
                              f" with any of the keys {', '.join(annotation.model_fields)}")
    if origin is dict:
        return "a mapping of names to " + _form_of(get_args(annotation)[1])
    if origin in (list, tuple, set, frozenset):
        return "a list, each " + _form_of(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_form_of(member) for member in get_args(annotation) if member is not type(None))
    return "a value"


def _example_of(annotation: Any, field: FieldInfo | None = None, key: str = "") -> str:
    """A value of ``annotation`` one could type: the field's first example, else its default, else one made up."""
    if field is not None:
        if field.examples:
            return _render(field.examples[0])
        default = field.get_default(call_default_factory=True)
        if default not in (None, PydanticUndefined, "", (), [], {}) and not isinstance(default, BaseModel):
            return _render(default)
    annotation = _unwrap(annotation)
    origin, limits = get_origin(annotation), _limits(field)
    if origin is Literal:
        return _render(get_args(annotation)[0])
    if annotation is bool:
        return "true"
    if annotation in (int, float):
        low = limits.get("ge", limits["gt"] + 1 if "gt" in limits else 1)
        return _render(min(low, limits.get("le", low)))
    if annotation in (SecretStr, SecretBytes):
        return "${" + (key.upper() or "SECRET") + "}"
    if _is_model(annotation):
        fields = annotation.model_fields
        shown = [name for name, info in fields.items() if info.is_required()] or list(fields)[:2]
        return "{" + ", ".join(f"{name}: {_example_of(fields[name].annotation, fields[name], name)}"
                               for name in shown) + "}"
    if origin is dict:
        return "{name: " + _example_of(get_args(annotation)[1]) + "}"
    if origin in (list, tuple, set, frozenset):
        return "[" + _example_of(get_args(annotation)[0]) + "]"
    if origin in (Union, types.UnionType):
        return _example_of(next(m for m in get_args(annotation) if m is not type(None)))
    return "..."


def _expected(annotation: Any, field: FieldInfo | None) -> str:
    extra = field.json_schema_extra if field is not None else None
    if isinstance(extra, dict) and isinstance(extra.get("expected"), str):
        return str(extra["expected"])
    return _form_of(annotation, field)


def expect(model: type[BaseModel], *loc: int | str) -> tuple[str, str]:
    """``(expected form, example)`` of the value at ``loc`` in ``model``, for a ConfigError raised outside
    validation (e.g. a key an adapter requires): ``ConfigError(path, "required", *expect(StoreSettings, "api_key"))``.
    """
    annotation, field, key, _parent = _spot(model, loc)
    return _expected(annotation, field), _example_of(annotation, field, key)


def one_of(value: str, choices: list[str], fallback: str = "") -> tuple[str, str]:
    """``(expected, example)`` for a name that is not among ``choices``: the list, and the closest name."""
    close = difflib.get_close_matches(value, choices, n=1)
    example = close[0] if close else fallback if fallback in choices else choices[0] if choices else fallback
    return "one of " + (", ".join(choices) or "(none installed)"), example


def _raw_at(document: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        try:
            document = document[part]
        except (KeyError, IndexError, TypeError):
            return None
    return document


def _got(value: Any, echo: bool) -> str:
    """The wrong input, described; its value only when ``echo`` (never a secret, nor a value from ``${...}``)."""
    if isinstance(value, bool) or value is None:
        return _render(value)
    if isinstance(value, int | float):
        return f"the number {_render(value)}" if echo else "a number"
    if isinstance(value, str):
        return f"text {value[:40]!r}" if echo else "text"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def config_error(error: ErrorDetails, model: type[BaseModel], prefix: str = "",
                 document: Any = None) -> ConfigError:
    """One pydantic error about ``model`` as ``<key.path>: <what is wrong>; expected <form>, e.g. <example>``.

    ``prefix`` is the key path of the document ``model`` validated (e.g. ``stores[0].default.options``);
    ``document`` is that document as written, before ``${...}`` was resolved (so such values are never echoed).
    """
    loc = tuple(error["loc"])
    annotation, field, key, parent = _spot(model, loc)
    kind = error["type"]
    cause = (error.get("ctx") or {}).get("error")
    path = _join(prefix, format_location(loc))
    raw = _raw_at(document, loc)
    secret = _unwrap(annotation) in (SecretStr, SecretBytes) or (isinstance(raw, str) and _ENV_START in raw)
    shown = _got(error.get("input"), echo=not secret)
    if isinstance(raw, str) and _ENV_START in raw:
        shown += f" (from {raw[:60]})"  # the reference as written, never the value it resolved to
    if kind == "extra_forbidden" and parent is not None:
        return ConfigError(path, "unknown key", *one_of(key, list(parent.model_fields)))
    expected, example = _expected(annotation, field), _example_of(annotation, field, key)
    if isinstance(cause, Invalid):
        return ConfigError(_join(path, cause.key), cause.problem, cause.expected or expected,
                           cause.example or example)
    problems = {
        "missing": "required",
        "literal_error": f"{shown} is not one of the choices",
        "greater_than": f"{shown} is too small", "greater_than_equal": f"{shown} is too small",
        "less_than": f"{shown} is too large", "less_than_equal": f"{shown} is too large",
        "string_pattern_mismatch": "not in the expected form",
        "string_too_short": "too short", "string_too_long": "too long",
    }
    if kind in problems:
        problem = problems[kind]
    elif cause is not None:
        problem = str(cause)
    elif kind.endswith(("_type", "_parsing")):
        problem = f"got {shown}"
    else:
        message = str(error["msg"])
        problem = message[:1].lower() + message[1:]
    return ConfigError(path, problem, expected, example)


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
                raise ConfigError(path, f"environment variable {name} is not set",
                                  f"{name} set in the daemon's environment (systemd EnvironmentFile=, "
                                  "docker --env-file)", f"{name}=<value>")
            return environ[name]

        if _ENV_START in _ENV_REF.sub("", value):
            raise ConfigError(path, "malformed environment reference",
                              "${NAME} with NAME made of letters, digits and _ (not starting with a digit)",
                              "${SOFTSTORE_API_KEY}")
        return _ENV_REF.sub(substitute, value)
    return value


def parse_settings(document: Any, environ: dict[str, str] | os._Environ[str] | None = None) -> Settings:
    """Validate an already-parsed document (a dict) into Settings."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError("", "the configuration must be a mapping of keys", "top-level keys such as database, "
                          "server and stores", "stores: [{name: main, marketplace: softstore, ...}]")
    resolved = resolve_env(document, os.environ if environ is None else environ)
    try:
        return Settings.model_validate(resolved)
    except ValidationError as exc:
        raise config_error(exc.errors()[0], Settings, document=document) from None


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
