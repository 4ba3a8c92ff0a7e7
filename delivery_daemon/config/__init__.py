"""Configuration: read once, at the edge, from YAML; everything else gets plain values passed in.

``load_settings(path)`` resolves ``${ENV_VAR}`` references (and secrets from files: ``${file:/path}``,
``${credential:NAME}``, ``ENV_VAR_FILE``), validates the document and returns :class:`Settings`.
Any problem becomes a :class:`~delivery_daemon.errors.ConfigError` whose message is one line naming the key path,
what is wrong and what to type instead, e.g. ``stores[0].api_key: required; expected a secret, best given as
${ENV_VAR}, e.g. ${SOFTSTORE_API_KEY}``. One formatter (:func:`config_error`) makes that line for every pydantic
error, here and for plugin options: the expected form comes from the field's type and constraints (or its
``json_schema_extra={"expected": ...}``), the example from its ``examples``, else its default. Secrets are held as
:class:`pydantic.SecretStr` so they never print, and a value is never echoed into an error when it is a secret or
came from ``${...}``.

The package's modules: :mod:`.sections` (the daemon-wide sections), :mod:`.stores` (a store's), :mod:`.settings`
(the whole document, ``${VAR}`` interpolation and loading), :mod:`.secret_files` (secrets read from files) and
:mod:`.formatter` (the error line). Import from
``delivery_daemon.config``: the names below are its API.
"""

from delivery_daemon.config.formatter import Invalid, config_error, expect, format_location, one_of
from delivery_daemon.config.secret_files import ReadableSecret
from delivery_daemon.config.sections import (
    DEFAULT_RETRY_SCHEDULE,
    AdminSettings,
    DatabaseSettings,
    DeliverySettings,
    LoggingSettings,
    PluginSettings,
    PoolSettings,
    RateLimitSettings,
    RetentionSettings,
    SecuritySettings,
    ServerSettings,
    StatusSettings,
    StockSyncSettings,
    WatchdogSettings,
    WorkerSettings,
)
from delivery_daemon.config.settings import Settings, load_settings, parse_settings, resolve_env
from delivery_daemon.config.stores import (
    WHSEC_EXAMPLE,
    WHSEC_FORM,
    ChannelSettings,
    OutboundWebhookSettings,
    ProductSettings,
    SignatureSettings,
    SmtpSettings,
    StaffSettings,
    StoreSettings,
    whsec_key,
)

__all__ = [
    "DEFAULT_RETRY_SCHEDULE",
    "WHSEC_EXAMPLE",
    "WHSEC_FORM",
    "AdminSettings",
    "ChannelSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "Invalid",
    "LoggingSettings",
    "OutboundWebhookSettings",
    "PluginSettings",
    "PoolSettings",
    "ProductSettings",
    "RateLimitSettings",
    "ReadableSecret",
    "RetentionSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "SignatureSettings",
    "SmtpSettings",
    "StaffSettings",
    "StatusSettings",
    "StockSyncSettings",
    "StoreSettings",
    "WatchdogSettings",
    "WorkerSettings",
    "config_error",
    "expect",
    "format_location",
    "load_settings",
    "one_of",
    "parse_settings",
    "resolve_env",
    "whsec_key",
]
