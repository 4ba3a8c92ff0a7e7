"""The whole configuration (:class:`Settings`) and how it is read: ``${VAR}`` interpolation, validation, and the
YAML file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from delivery_daemon.config.formatter import ENV_START, Invalid, config_error
from delivery_daemon.config.sections import (
    AdminSettings,
    DatabaseSettings,
    DeliverySettings,
    LoggingSettings,
    Model,
    PluginSettings,
    RetentionSettings,
    SecuritySettings,
    ServerSettings,
    StatusSettings,
    StockSyncSettings,
    WorkerSettings,
)
from delivery_daemon.config.stores import StoreSettings
from delivery_daemon.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Settings(Model):
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

        if ENV_START in _ENV_REF.sub("", value):
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
