"""The whole configuration (:class:`Settings`) and how it is read: interpolation (``${VAR}``, ``${file:/path}``,
``${credential:NAME}``, and ``VAR_FILE`` for an unset ``${VAR}``; see :mod:`.secret_files`), validation, and the
YAML file."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from delivery_daemon.config.formatter import ENV_START, Invalid, config_error
from delivery_daemon.config.secret_files import ReadableSecret, credential_file, read_secret
from delivery_daemon.config.sections import (
    POOL_NAME,
    AdminSettings,
    DatabaseSettings,
    DeliverySettings,
    LoggingSettings,
    Model,
    PluginSettings,
    PoolSettings,
    RetentionSettings,
    SecuritySettings,
    ServerSettings,
    StatusSettings,
    StockSyncSettings,
    WatchdogSettings,
    WorkerSettings,
)
from delivery_daemon.config.stores import StoreSettings
from delivery_daemon.errors import ConfigError

_ENV_REF = re.compile(r"\$\{(?:(file|credential):([^}]+)|([A-Za-z_][A-Za-z0-9_]*))\}")
"""``${NAME}``, or ``${file:/path}`` / ``${credential:NAME}`` (group 1 the source, group 2 its argument)."""
_FORMS = "${NAME} (NAME of letters, digits and _, not starting with a digit), ${file:/path} or ${credential:NAME}"


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
    pools: dict[str, PoolSettings] = Field(default_factory=dict)
    watchdog: WatchdogSettings = WatchdogSettings()
    stores: tuple[StoreSettings, ...] = ()

    @model_validator(mode="after")
    def _status_needs_admin_address(self) -> Settings:
        if self.status.enabled and self.admin.port is None:
            raise Invalid(
                "required when status.enabled is true (the status page is served on the admin address, "
                "never on the public webhook port)",
                "a port other than server.port",
                "9100",
                key="admin.port",
            )
        return self

    @model_validator(mode="after")
    def _unique_store_names(self) -> Settings:
        seen: set[str] = set()
        for index, store in enumerate(self.stores):
            if store.name in seen:
                raise Invalid(
                    f"duplicate store name {store.name!r}",
                    "a name not used by another store",
                    f"{store.name}-2",
                    key=f"stores[{index}].name",
                )
            seen.add(store.name)
        return self

    @model_validator(mode="after")
    def _known_pools(self) -> Settings:
        for name in self.pools:
            if not re.match(POOL_NAME, name):
                raise Invalid(
                    f"bad pool name {name!r}",
                    "letters, digits, _ . - (at most 64, starting with a letter or digit)",
                    "shared",
                    key=f"pools.{name}",
                )
        for index, store in enumerate(self.stores):
            named = [(f"products.{pid}", product) for pid, product in store.products.items()]
            named += [("default", store.default)] if store.default is not None else []
            for where, product in named:
                if product.pool is not None and product.pool not in self.pools:
                    known = ", ".join(sorted(self.pools)) or "none is configured"
                    raise Invalid(
                        f"unknown pool {product.pool!r} (pools: {known})",
                        "the name of a pool under the top-level pools section",
                        f"{product.pool}, with pools: {{{product.pool}: {{low_stock_threshold: 10}}}}",
                        key=f"stores[{index}].{where}.pool",
                    )
        return self

    def store(self, name: str) -> StoreSettings | None:
        return next((store for store in self.stores if store.name == name), None)

    def pool_of(self, store: str, product_id: str) -> str | None:
        """The pool the store's product (or its default product, for an id it does not list) draws on, if any."""
        found = self.store(store)
        product = found.product(product_id) if found is not None else None
        return product.pool if product is not None else None

    def pool_products(self, pool: str) -> list[tuple[str, str | None]]:
        """Every (store, product id) drawing on ``pool``; the product id is None for a store's default product."""
        drawing: list[tuple[str, str | None]] = []
        for store in self.stores:
            drawing += [(store.name, pid) for pid, product in store.products.items() if product.pool == pool]
            if store.default is not None and store.default.pool == pool:
                drawing.append((store.name, None))
        return drawing


def resolve_env(
    value: Any, environ: Mapping[str, str], path: str = "", warnings: list[ReadableSecret] | None = None
) -> Any:
    """Replace every reference in every string of a parsed document: ``${NAME}`` by the environment variable
    (else, when only ``NAME_FILE`` is set, by that file), ``${file:/path}`` by the file, ``${credential:NAME}`` by
    ``$CREDENTIALS_DIRECTORY/NAME``. Anything missing or unreadable is a ConfigError naming the key path (and the
    file); secret files other users may read are appended to ``warnings``."""
    if isinstance(value, dict):
        return {k: resolve_env(v, environ, f"{path}.{k}" if path else str(k), warnings) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_env(v, environ, f"{path}[{i}]", warnings) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            source, argument, name = match.groups()
            if source == "file":
                return read_secret(path, argument, match.group(0), environ, warnings)
            if source == "credential":
                return read_secret(path, credential_file(path, argument, environ), match.group(0), environ, warnings)
            if name in environ:
                return environ[name]
            if environ.get(f"{name}_FILE"):  # the Docker secrets convention (NAME itself wins when both are set)
                return read_secret(path, environ[f"{name}_FILE"], f"{name}_FILE", environ, warnings)
            raise ConfigError(
                path,
                f"environment variable {name} is not set",
                f"{name} set in the daemon's environment (systemd EnvironmentFile=, "
                f"docker --env-file) or {name}_FILE naming a file that holds it",
                f"{name}=<value>",
            )

        if ENV_START in _ENV_REF.sub("", value):
            raise ConfigError(path, "malformed reference", _FORMS, "${SOFTSTORE_API_KEY}")
        return _ENV_REF.sub(substitute, value)
    return value


def parse_settings(
    document: Any, environ: Mapping[str, str] | None = None, warnings: list[ReadableSecret] | None = None
) -> Settings:
    """Validate an already-parsed document (a dict) into Settings; see :func:`resolve_env` for ``warnings``."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(
            "",
            "the configuration must be a mapping of keys",
            "top-level keys such as database, server and stores",
            "stores: [{name: main, marketplace: softstore, ...}]",
        )
    resolved = resolve_env(document, os.environ if environ is None else environ, warnings=warnings)
    try:
        return Settings.model_validate(resolved)
    except ValidationError as exc:
        raise config_error(exc.errors()[0], Settings, document=document) from None


def load_settings(
    path: str | Path, environ: Mapping[str, str] | None = None, warnings: list[ReadableSecret] | None = None
) -> Settings:
    """Read, resolve and validate a YAML configuration file; secret files other users may read are appended to
    ``warnings`` (for the caller to report once logging is set up)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror or exc}") from None
    # Imported here, not with the module: a daemon built from settings already parsed (the bench, plugin authors'
    # tests through delivery_daemon.testing) never reads YAML, and PyYAML holds ~0.9 MB (memory, issue #26 item 5).
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError("", f"{path}: {problem}{where}") from None
    return parse_settings(document, environ, warnings)
