"""Opaque, HMAC-signed unsubscribe tokens: the URL names a sequence, never an email address."""

from __future__ import annotations

import base64
import hashlib
import hmac


def sequence_key(email: str, campaign: str) -> str:
    """One sequence per (email, campaign): its key is derived, so every retry computes the same one."""
    digest = hashlib.sha256(f"{campaign}\x1f{email.strip().lower()}".encode()).hexdigest()
    return digest[:32]


def sequence_number(key: str) -> int:
    """A 56-bit integer from the key's hash, so whole tables can be joined on int64 instead of strings.

    Not unique by construction: the due computation confirms every match on the full key.
    """
    return int(key[:14], 16)


def _signature(secret: str, key: str) -> str:
    mac = hmac.new(secret.encode(), f"unsubscribe:{key}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode().rstrip("=")


def unsubscribe_token(secret: str, key: str) -> str:
    return f"{key}.{_signature(secret, key)}"


def verify_unsubscribe_token(secret: str, token: str) -> str | None:
    """The sequence key the token was made for, or None when it is malformed or forged."""
    key, dot, signature = token.partition(".")
    if not dot or len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
        return None
    if not hmac.compare_digest(signature, _signature(secret, key)):
        return None
    return key
