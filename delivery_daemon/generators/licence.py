"""Offline-verifiable licence keys: ``key/{base64url payload}.{base64url signature}`` signed with Ed25519.

The shape follows Keygen's signed keys. The payload is compact JSON (sorted keys, no spaces)::

    {"exp": 1893456000, "i": 1, "iat": 1800000000, "n": 2, "o": "order-id", "p": "product-id"}

``p`` product id, ``o`` order id, ``i`` seat index (1…n) and ``n`` the order's quantity, ``iat`` issued-at and the
optional ``exp`` expiry (epoch seconds). The signature covers the bytes ``key/{base64url payload}`` exactly;
base64url is unpadded. ``docs/plugins.md`` has a 20-line verifier a seller can paste into their application.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delivery_daemon.errors import DeliveryDaemonError

PREFIX = "key/"


if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# cryptography is imported inside the functions that use it: the plugin module that imports this one is loaded by
# every daemon at start-up, and OpenSSL's bindings cost idle RSS a daemon without signed licences never needs.


class LicenseError(DeliveryDaemonError):
    """A key file is unusable, or a licence key is malformed, forged or expired (the message says which)."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new Ed25519 key pair as PEM; the private key file is created 0600 and never overwritten."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise LicenseError(f"{private_path} already exists; refusing to overwrite a signing key") from None
    except OSError as exc:
        raise LicenseError(f"cannot create {private_path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise LicenseError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise LicenseError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LicenseError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise LicenseError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise LicenseError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise LicenseError(f"{path} is not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class LicensePayload:
    product: str
    order: str
    index: int
    quantity: int
    issued_at: int
    expires_at: int | None = None

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "p": self.product,
            "o": self.order,
            "i": self.index,
            "n": self.quantity,
            "iat": self.issued_at,
        }
        if self.expires_at is not None:
            data["exp"] = self.expires_at
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sign(payload: LicensePayload, private: Ed25519PrivateKey) -> str:
    """The licence key for ``payload`` (deterministic: Ed25519 signatures do not use randomness)."""
    signed = PREFIX + _b64encode(payload.to_json())
    return f"{signed}.{_b64encode(private.sign(signed.encode('ascii')))}"


def _signed_part(text: str, prefix: str, public: Ed25519PublicKey, what: str, foreign: str) -> str:
    """``{prefix}{payload}`` of ``text`` (``{prefix}{payload}.{signature}``) if ``public`` verifies the signature;
    LicenseError naming ``what`` it is not, or saying ``foreign`` (or altered) for a wrong signature."""
    from cryptography.exceptions import InvalidSignature

    signed, dot, signature = text.strip().rpartition(".")
    if not dot or not signed.startswith(prefix):
        raise LicenseError(f"not {what} (expected {prefix}<payload>.<signature>)")
    try:
        public.verify(_b64decode(signature), signed.encode("ascii"))
    except (InvalidSignature, ValueError, UnicodeEncodeError):
        raise LicenseError(f"invalid signature: {foreign}, or was altered") from None
    return signed


def verify(key: str, public: Ed25519PublicKey, *, now: float) -> LicensePayload:
    """The payload of a genuine, unexpired ``key``; LicenseError otherwise."""
    signed = _signed_part(key, PREFIX, public, "a licence key", "the key was not issued with this public key")
    try:
        data = json.loads(_b64decode(signed.removeprefix(PREFIX)))
        payload = LicensePayload(
            product=str(data["p"]),
            order=str(data["o"]),
            index=int(data["i"]),
            quantity=int(data["n"]),
            issued_at=int(data["iat"]),
            expires_at=int(data["exp"]) if data.get("exp") is not None else None,
        )
    except (ValueError, KeyError, TypeError):
        raise LicenseError("signed payload is not in the documented format") from None
    if payload.expires_at is not None and payload.expires_at <= now:
        raise LicenseError(f"expired at {payload.expires_at}")
    return payload


REVOCATIONS_PREFIX = "revocations/"


@dataclass(frozen=True)
class RevocationList:
    """A signed list of revoked licence keys of one product, by the SHA-256 (hex) of each key's text."""

    product: str
    issued_at: int
    revoked: frozenset[str]

    def revokes(self, key: str) -> bool:
        """Whether ``key`` (a licence key as given to the buyer) is on the list."""
        return key_hash(key) in self.revoked


def key_hash(key: str) -> str:
    """The SHA-256 (hex) of a key's text, surrounding whitespace removed: how a revocation list names a key."""
    return hashlib.sha256(key.strip().encode()).hexdigest()


def sign_revocations(product: str, key_hashes: Sequence[str], issued_at: int, private: Ed25519PrivateKey) -> str:
    """``revocations/{base64url payload}.{base64url signature}``: payload ``{"iat", "p", "r"}`` (compact JSON,
    sorted keys; ``r`` the sorted hashes), signed like a licence key over ``revocations/{payload}``."""
    data = {"p": product, "iat": issued_at, "r": sorted(set(key_hashes))}
    signed = REVOCATIONS_PREFIX + _b64encode(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    return f"{signed}.{_b64encode(private.sign(signed.encode('ascii')))}"


def verify_revocations(document: str, public: Ed25519PublicKey) -> RevocationList:
    """The list in a genuine ``document`` signed with ``public``'s private key; LicenseError otherwise."""
    signed = _signed_part(
        document, REVOCATIONS_PREFIX, public, "a revocation list", "the list was not signed with this public key"
    )
    try:
        data = json.loads(_b64decode(signed.removeprefix(REVOCATIONS_PREFIX)))
        revoked = data["r"]
        if not isinstance(revoked, list) or not all(isinstance(item, str) for item in revoked):
            raise TypeError("r")
        return RevocationList(product=str(data["p"]), issued_at=int(data["iat"]), revoked=frozenset(revoked))
    except (ValueError, KeyError, TypeError):
        raise LicenseError("signed revocation list is not in the documented format") from None


__all__ = [
    "PREFIX",
    "REVOCATIONS_PREFIX",
    "LicenseError",
    "LicensePayload",
    "RevocationList",
    "generate_keypair",
    "key_hash",
    "load_private_key",
    "load_public_key",
    "sign",
    "sign_revocations",
    "verify",
    "verify_revocations",
]
