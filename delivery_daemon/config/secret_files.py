"""Secrets read from files while the configuration is interpolated: ``${file:/path}``, ``${credential:NAME}``
(systemd's ``LoadCredential=``, read from ``$CREDENTIALS_DIRECTORY``) and the Docker convention ``NAME_FILE`` for an
unset ``${NAME}``.

A file's text is the value with its trailing newline(s) removed. An error names the key path and the file, never the
content. A file other users may read is used, with a :class:`ReadableSecret` warning for the caller to report: Docker
mounts secrets ``0444`` by default (in a mount only the container sees), so refusing would break the common case;
files under ``/run/secrets/`` or ``$CREDENTIALS_DIRECTORY`` are private mounts and are not warned about.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from delivery_daemon.errors import ConfigError

MAX_BYTES = 64 * 1024
"""A secret is a key or a password; a larger file is a wrong path (or a device), refused before it is read whole."""

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
PRIVATE_MOUNTS = ("/run/secrets/",)
"""Where container secrets live: mounted for the container alone, ``0444`` by Docker's default."""


@dataclass(frozen=True)
class ReadableSecret:
    """A secret file that users other than the daemon's may read; ``key`` is where the configuration uses it."""

    key: str
    file: str
    mode: int

    def __str__(self) -> str:
        return (
            f"{self.key}: secret file {self.file} is readable by other users (mode {self.mode:04o}); "
            f"chmod 0600 (or 0640 with the daemon's group) {self.file}"
        )


def read_secret(
    key: str, file: str, origin: str, environ: Mapping[str, str], warnings: list[ReadableSecret] | None
) -> str:
    """The text of ``file`` for the configuration key ``key``; ``origin`` is how the configuration named it (for
    the error line), e.g. ``${file:/run/secrets/api_key}`` or ``SOFTSTORE_API_KEY_FILE``."""
    expected = "a readable file holding only the secret (a trailing newline is ignored)"
    path = Path(file)
    if not path.is_absolute():
        raise ConfigError(
            key,
            f"secret file {file} (from {origin}) is not an absolute path",
            "an absolute path",
            "/run/secrets/softstore_api_key",
        )
    try:
        # Checked before opening: opening a FIFO would wait for a writer, and a device may never end.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ConfigError(key, f"secret file {file} (from {origin}) is not a regular file", expected)
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            key, f"cannot read secret file {file} (from {origin}): {exc.strerror or exc}", expected
        ) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(key, f"secret file {file} (from {origin}) is larger than {MAX_BYTES} bytes", expected)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(key, f"secret file {file} (from {origin}) is not UTF-8 text", expected) from None
    if info.st_mode & stat.S_IROTH and warnings is not None and not _private_mount(path, environ):
        warnings.append(ReadableSecret(key, file, stat.S_IMODE(info.st_mode)))
    return text.rstrip("\r\n")


def credential_file(key: str, name: str, environ: Mapping[str, str]) -> str:
    """The path of systemd credential ``name`` (``LoadCredential=name:/path`` in the unit)."""
    directory = environ.get(CREDENTIALS_ENV)
    if not directory:
        raise ConfigError(
            key,
            f"${{credential:{name}}}: {CREDENTIALS_ENV} is not set (systemd sets it for a unit "
            "with LoadCredential= or SetCredential=)",
            f"LoadCredential={name}:/etc/delivery-daemon/credentials/{name} in the unit",
        )
    if "/" in name or name in (".", ".."):
        raise ConfigError(
            key, f"${{credential:{name}}}: not a credential name", "a name without /", "${credential:softstore-api-key}"
        )
    return str(Path(directory) / name)


def _private_mount(path: Path, environ: Mapping[str, str]) -> bool:
    text = str(path)
    credentials = environ.get(CREDENTIALS_ENV)
    if credentials and text.startswith(credentials.rstrip("/") + "/"):
        return True
    return text.startswith(PRIVATE_MOUNTS)
