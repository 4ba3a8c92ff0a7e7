"""``daemon_secrets``: small random secrets the daemon makes for itself, one per name, sealed with the cipher.

The only one today is ``stock_hash_key``, the HMAC key behind ``stock_keys.key_hash`` (see
:mod:`delivery_daemon.storage.stock_pool`). It is random per database rather than derived from the encryption key so
that a key rotation leaves every ``key_hash`` (and with it the import de-duplication) unchanged; it is sealed with the
cipher like every other secret so that a copied database without the key file cannot test guessed keys against the
hashes. With no cipher (a PostgreSQL database with no key configured, where nothing is encrypted) it is stored as is.

Creation is race-safe: every process that finds no row inserts its own candidate with ``ON CONFLICT DO NOTHING``
and then reads the row back, so all of them use whichever candidate was committed first.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from sqlalchemy import Connection, select, update

from delivery_daemon.errors import DeliveryDaemonError
from delivery_daemon.storage import dialect
from delivery_daemon.storage.cipher import PREFIX, Cipher, DecryptError
from delivery_daemon.storage.models import DAEMON_SECRETS as SECRETS

STOCK_HASH_KEY = "stock_hash_key"


class VaultError(DeliveryDaemonError):
    """A stored secret is sealed but cannot be opened (no key configured, or not the key that sealed it)."""


def context(name: str) -> str:
    """The associated data a secret is sealed with (its row), so it cannot be swapped with another."""
    return f"daemon_secrets/{name}"


def _insert_ignore(conn: Connection) -> Any:
    return dialect.insert(conn.dialect.name, SECRETS).on_conflict_do_nothing()


def _open(value: str, name: str, cipher: Cipher | None) -> bytes:
    if value.startswith(PREFIX + ":"):
        if cipher is None:
            raise VaultError(f"daemon secret {name!r} is encrypted but no encryption key is configured")
        try:
            value = cipher.open(value, context(name))
        except DecryptError as exc:
            raise VaultError(str(exc)) from None
    return base64.urlsafe_b64decode(value)


def secret(conn: Connection, name: str, cipher: Cipher | None, now: float) -> bytes:
    """The 32-byte secret ``name``, created on first use (inside the caller's transaction, see the module doc).

    A value stored unsealed while a cipher is now configured is sealed in place."""
    candidate = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    stored = conn.execute(select(SECRETS.c.value).where(SECRETS.c.name == name)).scalar_one_or_none()
    if stored is None:
        sealed = candidate if cipher is None else cipher.seal(candidate, context(name))
        conn.execute(_insert_ignore(conn), {"name": name, "value": sealed, "created_at": now})
        stored = conn.execute(select(SECRETS.c.value).where(SECRETS.c.name == name)).scalar_one()
    raw = _open(stored, name, cipher)
    if cipher is not None and not stored.startswith(PREFIX + ":"):
        reseal(conn, name, stored, cipher)
    return raw


def reseal(conn: Connection, name: str, stored: str, cipher: Cipher) -> bool:
    """Seal ``name`` under the cipher's current key unless it already is; True if the row was rewritten."""
    if stored.startswith(f"{PREFIX}:{cipher.current}:"):
        return False
    plain = cipher.open(stored, context(name))
    conn.execute(
        update(SECRETS)
        .where(SECRETS.c.name == name, SECRETS.c.value == stored)
        .values(value=cipher.seal(plain, context(name)))
    )
    return True


def reseal_all(conn: Connection, cipher: Cipher) -> int:
    """Seal every daemon secret under the current key (key rotation); returns how many rows were rewritten."""
    rows = conn.execute(select(SECRETS.c.name, SECRETS.c.value)).all()
    return sum(reseal(conn, name, value, cipher) for name, value in rows)


__all__ = ["SECRETS", "STOCK_HASH_KEY", "VaultError", "reseal_all", "secret"]
