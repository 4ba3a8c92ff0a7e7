"""Paddle Classic's ``p_signature``, both ways: the Paddle Classic adapter verifies with it, the reference side signs.

Paddle Classic signs a webhook's fields, not its bytes: every form field but ``p_signature`` is sorted by name, the
sorted mapping is serialised as PHP's ``serialize()`` writes an array of strings, and ``p_signature`` is the base64 of
the RSA PKCS#1 v1.5 signature with SHA-1 of that text, made with the vendor's private key. The vendor's public key
(PEM) is shown in the Paddle dashboard. Checked with ``cryptography``; a failed check raises
:class:`~delivery_daemon.errors.WebhookRejected` 403 and the reason never contains the signature.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from delivery_daemon.errors import WebhookRejected

FIELD = "p_signature"


def php_serialise(fields: Mapping[str, str]) -> bytes:
    """``serialize($fields)`` as PHP writes an array whose keys and values are all strings, in the mapping's order.

    Written by hand, and only for strings, because that is all Paddle's signed text ever holds (every form field is
    a string, and Paddle's own verification samples cast each value to one first); a PHP serialisation library
    would be a dependency for twenty lines. Lengths are in UTF-8 bytes, as PHP counts them. PHP would write a key
    made only of decimal digits as an integer (``i:5;``); Paddle's field names never are, so this is not done.
    """
    parts = [f"a:{len(fields)}:{{".encode()]
    for key, value in fields.items():
        for text in (key, value):
            raw = text.encode("utf-8")
            parts.append(b's:%d:"' % len(raw) + raw + b'";')
    parts.append(b"}")
    return b"".join(parts)


def signed_text(fields: Mapping[str, str]) -> bytes:
    """What ``p_signature`` signs: every field but ``p_signature``, sorted by name, PHP-serialised."""
    return php_serialise({key: fields[key] for key in sorted(fields) if key != FIELD})


def load_public_key(pem: str) -> rsa.RSAPublicKey:
    """The vendor's RSA public key from its PEM text; ValueError when it is not one."""
    try:
        key = serialization.load_pem_public_key(pem.strip().encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def sign_fields(private_key: rsa.RSAPrivateKey, fields: Mapping[str, str]) -> str:
    """The ``p_signature`` Paddle Classic sends with ``fields`` (the reference side signs with it)."""
    signature = private_key.sign(signed_text(fields), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 (Paddle's scheme, not our choice)
    return base64.b64encode(signature).decode()


def verify_fields(public_key: rsa.RSAPublicKey, fields: Mapping[str, str]) -> None:
    """Raise WebhookRejected 403 unless ``fields[p_signature]`` signs the other fields."""
    sent = fields.get(FIELD)
    if not sent:
        raise WebhookRejected(403, f"missing {FIELD} field")
    try:
        signature = base64.b64decode(sent, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected(403, f"{FIELD} is not base64") from None
    try:
        public_key.verify(signature, signed_text(fields), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 (Paddle's scheme, not our choice)
    except InvalidSignature:
        raise WebhookRejected(403, "invalid signature") from None
