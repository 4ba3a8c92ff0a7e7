"""Encryption at rest for what a copied database must not reveal: delivery content (the keys) and the webhook
payload (SoftStore's delivery token).

Values are sealed with AES-256-GCM as ``enc1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>``. The row's identity
(``store/order_id/column``) is bound in as associated data, so a ciphertext moved to another row or column does not
decrypt. Values without the ``enc1:`` prefix are read as plaintext (rows written before encryption was on).

Keys are lines ``<key id>:<base64url 32 bytes>``; the first line is the current key (used to encrypt), the others
are old keys (only used to decrypt). Rotation: put a new first line, restart; old rows stay readable as long as their
key is listed. Where keys come from (:func:`load_cipher`): ``security.encryption_key_env`` (an environment variable
holding the lines; when it is unset, ``<that name>_FILE`` may name a key file, the Docker secrets convention), else
``security.encryption_key_file``, else a key file generated 0600 next to a SQLite database
on first start (``<database>.key``, logged as ``security.key_generated``).
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import structlog

from delivery_daemon.config import SecuritySettings
from delivery_daemon.errors import ConfigError, DeliveryDaemonError

log = structlog.get_logger("delivery_daemon.storage.cipher")

PREFIX = "enc1"
_NONCE = 12


class DecryptError(DeliveryDaemonError):
    """A sealed value could not be opened: unknown key id, wrong key, or tampered/moved ciphertext."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_key_line() -> str:
    """A fresh ``<key id>:<key>`` line for a key file or environment variable."""
    return f"k{secrets.token_hex(4)}:{_b64(secrets.token_bytes(32))}"


_KEY_FORM = "'<key id>:<base64url of 32 bytes>' lines, the current key first (see docs/guarantees.md)"
_KEY_COMMAND = "python -c 'from delivery_daemon.storage.cipher import new_key_line; print(new_key_line())'"
_KEY_EXAMPLE = f"the line {_KEY_COMMAND} prints"


def parse_keys(text: str, where: str) -> list[tuple[str, bytes]]:
    """Key lines (newline- or comma-separated, ``#`` comments allowed) → ``[(key id, key)]``, current first."""
    keys: list[tuple[str, bytes]] = []
    lines = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    for raw in ",".join(lines).split(","):
        line = raw.strip()
        if not line:
            continue
        kid, sep, encoded = line.partition(":")
        try:
            key = _unb64(encoded) if sep else b""
        except ValueError:
            key = b""
        if not kid or ":" in encoded or len(key) != 32:
            raise ConfigError(where, "a key line is malformed", _KEY_FORM, _KEY_EXAMPLE)
        keys.append((kid, key))
    if not keys:
        raise ConfigError(where, "no encryption key found", _KEY_FORM, _KEY_EXAMPLE)
    return keys


class Cipher:
    """Seal and open column values; the first key encrypts, every key decrypts."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        # Imported here, not at module level: cryptography's OpenSSL bindings cost ~7 MB of RSS, and a process that
        # never builds a Cipher (most CLI commands; PostgreSQL without a configured key) need not pay for them.
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._invalid: tuple[type[Exception], ...] = (InvalidTag, ValueError)
        self.current = keys[0][0]
        self._keys = {kid: AESGCM(key) for kid, key in keys}

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._keys[self.current].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{PREFIX}:{self.current}:{_b64(nonce + sealed)}"

    def open(self, value: str, context: str) -> str:
        if not value.startswith(PREFIX + ":"):
            return value  # written before encryption was enabled
        _, kid, encoded = value.split(":", 2)
        aead = self._keys.get(kid)
        if aead is None:
            raise DecryptError(f"value encrypted with key {kid!r}, which is not configured")
        try:
            data = _unb64(encoded)
            return aead.decrypt(data[:_NONCE], data[_NONCE:], context.encode()).decode()
        except self._invalid:
            raise DecryptError(f"value for {context} does not decrypt with key {kid!r} (tampered or moved)") from None


def _read_key_file(path: Path, where: str) -> str:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                where, f"{path} is readable by other users", "a key file only its owner can read", f"chmod 600 {path}"
            )
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            where,
            f"cannot read {path}: {exc.strerror or exc}",
            "the path of a readable key file",
            "/etc/delivery-daemon/encryption.keys",
        ) from None


def create_key_file(path: Path) -> None:
    """Write a new key file, 0600 from its first byte (never a moment world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# delivery-daemon encryption keys: current first, old ones after (see docs/guarantees.md)\n")
        out.write(new_key_line() + "\n")


def load_cipher(
    security: SecuritySettings, database_file: Path | None, environ: Mapping[str, str] | None = None
) -> Cipher | None:
    """The configured cipher (see the module doc); None only for a non-file database with no key configured."""
    environ = os.environ if environ is None else environ
    env_name, key_file = security.encryption_key_env, security.encryption_key_file
    if env_name:
        if not environ.get(env_name) and environ.get(f"{env_name}_FILE"):
            # A key file under another name: the same rule as security.encryption_key_file (owner-only).
            return Cipher(
                parse_keys(
                    _read_key_file(Path(environ[f"{env_name}_FILE"]), "security.encryption_key_env"),
                    "security.encryption_key_env",
                )
            )
        if not environ.get(env_name):
            raise ConfigError(
                "security.encryption_key_env",
                f"environment variable {env_name} is not set",
                f"{env_name} set in the daemon's environment to {_KEY_FORM} (or {env_name}_FILE naming a key file)",
                f'{env_name}="$({_KEY_COMMAND})"',
            )
        return Cipher(parse_keys(environ[env_name], "security.encryption_key_env"))
    if key_file:
        return Cipher(
            parse_keys(_read_key_file(Path(key_file), "security.encryption_key_file"), "security.encryption_key_file")
        )
    if database_file is None:
        log.warning("security.encryption_disabled", reason="no key configured and the database is not a file")
        return None
    path = database_file.with_name(database_file.name + ".key")
    if not path.exists():
        create_key_file(path)
        log.warning("security.key_generated", path=str(path), hint="back this file up with (not next to) the data")
    return Cipher(parse_keys(_read_key_file(path, "security.encryption_key_file"), "security.encryption_key_file"))
