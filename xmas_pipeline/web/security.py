"""What the intake trusts and what it lets out: content types, signatures, idempotency keys, client
addresses and the access log. Pure functions of their inputs, cheap enough for every request."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from xmas_pipeline.settings import IPNetwork

# --- JSON only ------------------------------------------------------------------------------------


def is_json(content_type: str | None) -> bool:
    """``application/json``, optionally with ``charset=utf-8``: a cross-site form cannot send that."""
    if not content_type:
        return False
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        if not param.strip():
            continue
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


# --- Standard Webhooks signatures -------------------------------------------------------------------


def webhook_verifiers(secrets: str, variable: str) -> list[Webhook]:
    """One verifier per secret; several (space or comma separated) let the sender rotate keys."""
    verifiers = []
    for secret in secrets.replace(",", " ").split():
        try:
            verifiers.append(Webhook(secret))
        except Exception as exc:
            raise ValueError(f"{variable} must be whsec_ followed by base64; got an unusable value ({exc})") from exc
    return verifiers


def _well_formed(entry: str) -> bool:
    version, comma, signature = entry.partition(",")
    if version != "v1" or not comma:
        return False
    try:
        return len(base64.b64decode(signature, validate=True)) == 32  # HMAC-SHA256
    except (binascii.Error, ValueError):
        return False


def verify_signature(verifiers: Sequence[Webhook], body: bytes, headers: Mapping[str, str]) -> str | None:
    """None when any ``v1`` signature in the header verifies with any secret, else why not.

    Malformed entries (another version, bad base64, a wrong length) are skipped rather than fatal, so
    a sender mid-rotation or a proxy that appends its own entry does not break good signatures.
    """
    entries = [e for e in headers.get("webhook-signature", "").split() if _well_formed(e)]
    if headers.get("webhook-signature") and not entries:
        return "no well-formed v1 signature"
    cleaned = {**headers, "webhook-signature": " ".join(entries)}
    reason = "missing signature headers"
    for verifier in verifiers:
        try:
            verifier.verify(body, cleaned, json_parse=False)
            return None
        except WebhookVerificationError as exc:
            reason = str(exc)
        except (ValueError, UnicodeDecodeError):  # a body that is not UTF-8
            reason = "malformed request"
    return reason


# --- idempotency keys -----------------------------------------------------------------------------

MAX_CALLER_KEY = 128
CALLER_KEY = re.compile(r"[!-~]{1,%d}" % MAX_CALLER_KEY)  # visible ASCII, no spaces
CALLER_KEY_PATTERN = "^[!-~]{1,%d}$" % MAX_CALLER_KEY  # the same rule for the OpenAPI schema


def caller_key(kind: str, email: str, key: str) -> str:
    """The stored key of a key the caller chose (``Idempotency-Key`` or ``webhook-id``).

    Bound to the email, so reusing a key for someone else stores their signup instead of dropping
    it; and prefixed with ``kind:``, so it can never equal a natural key ``email|campaign``: a
    natural key starts with the email, which contains an ``@`` and never a ``:`` (the validator
    refuses quoted local parts), while ``kind`` has no ``@`` and ends in ``:``. Fits the 400-character
    column: ``kind`` is short, an email at most 254 characters, the key at most 128.
    """
    return f"{kind}:{email}|{key}"


# --- the client's address ---------------------------------------------------------------------------


def _trusted(address: str, networks: Sequence[IPNetwork]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return ip if any(ip in network for network in networks) else None


def client_ip(peer: str | None, forwarded: str | None, trusted: Sequence[IPNetwork]) -> str | None:
    """The consent record's client address: the TCP peer, unless the peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read from the right (each proxy appends the address
    it saw) and the first hop that is not itself a trusted proxy is the client; whatever a client
    puts at the left of the header is never believed.
    """
    if not trusted or not forwarded or peer is None or _trusted(peer, trusted) is None:
        return peer
    address = peer
    for hop in reversed(forwarded.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage (or a port): stop at the last address a trusted proxy vouched for
        address = hop
        if _trusted(hop, trusted) is None:
            break
    return address[:64]


# --- the access log -------------------------------------------------------------------------------

_TOKEN_PATH = re.compile(r"(/u/)[^\s?#\"/]+")
REDACTED = r"\1[token]"


class RedactUnsubscribeTokens(logging.Filter):
    """An unsubscribe token works like a password for one address: keep it out of every access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _TOKEN_PATH.sub(REDACTED, arg) if isinstance(arg, str) and "/u/" in arg else arg for arg in record.args
            )
        if isinstance(record.msg, str) and "/u/" in record.msg:
            record.msg = _TOKEN_PATH.sub(REDACTED, record.msg)
        return True


ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access")


def redact_access_logs() -> None:
    """Install the filter on the servers' access loggers (once per process, whatever the log config)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUnsubscribeTokens) for f in logger.filters):
            logger.addFilter(RedactUnsubscribeTokens())
