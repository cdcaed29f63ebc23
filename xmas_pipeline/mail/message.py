"""Turning an OutgoingMessage into RFC 5322 bytes, plus the header-safety helpers every sender uses."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from xmas_pipeline.mail.base import OutgoingMessage

#: Policy for generating headers. The default 78-column limit makes Python RFC 2047-encode a long
#: ``List-Unsubscribe`` value (``=?utf-8?q?...``), which no mail client can use; RFC 5322's hard limit
#: is 998, so a long https URL plus a mailto stays one plain line.
POLICY = SMTP.clone(max_line_length=998)

#: Policy for encoding bodies: quoted-printable lines must stay within RFC 2045's 76 characters.
_BODY_POLICY = SMTP.clone(max_line_length=76)

_SAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_CONTROL_RUN = re.compile(r"[\x00-\x1f\x7f\x80-\x9f\u2028\u2029]+")
_MAX_KEY_LEN = 200  # keeps "<key>.eml" under the usual 255-byte file-name limit


def safe_header(value: str) -> str:
    """Return ``value`` with CR, LF and other control characters replaced by one space (no header injection)."""
    # The class covers all of Unicode category Cc (tab, CR, LF, NEL, ...) plus the line/paragraph separators.
    return _CONTROL_RUN.sub(" ", value).strip()


def format_address(name: str | None, email: str) -> str:
    """Return ``"Name" <email>`` with quoting done by the stdlib (commas, quotes, non-ASCII are safe)."""
    return str(Address(display_name=safe_header(name or ""), addr_spec=safe_header(email)))


def safe_key(key: str) -> str:
    """Map an idempotency key to ``[A-Za-z0-9._-]`` (usable as a file name and a Message-ID left part).

    A key that is already safe is returned unchanged; otherwise unsafe characters become ``_`` and a
    short hash of the original key is appended, so two different keys never share a name.
    """
    if not key:
        raise ValueError("idempotency key must not be empty")
    already_safe = (
        not _SAFE_KEY_CHARS.search(key)
        and len(key) <= _MAX_KEY_LEN
        and not key.startswith(".")
        and not key.endswith(".")
        and ".." not in key
    )
    if already_safe:
        return key
    cleaned = _SAFE_KEY_CHARS.sub("_", key)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip(".")[: _MAX_KEY_LEN - 13] or "key"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    return f"{cleaned}-{digest}"


def message_id_for(key: str, domain: str) -> str:
    """Return the deterministic Message-ID ``<{safe key}@{domain}>`` for an idempotency key."""
    domain = safe_header(domain).strip("<>@ ")
    if not domain or not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        raise ValueError(f"invalid Message-ID domain: {domain!r}")
    return f"<{safe_key(key)}@{domain}>"


def _set_text(mime: EmailMessage, body: str, subtype: str, add: bool) -> None:
    # 7bit when possible (plain ASCII, lines within 998); otherwise quoted-printable, never raw 8bit,
    # so the message is safe on SMTP servers without 8BITMIME.
    lines = body.splitlines() or [""]
    plain = body.isascii() and max(len(line) for line in lines) <= 998
    cte = "7bit" if plain else "quoted-printable"
    if add:
        mime.add_alternative(body, subtype=subtype, charset="utf-8", cte=cte)
    else:
        mime.set_content(body, subtype=subtype, charset="utf-8", cte=cte)


def _one_address(mime: EmailMessage, name: str) -> None:
    header = mime[name]
    if header is None or len(header.addresses) != 1:
        raise ValueError(f"{name} must hold exactly one address, got {str(header)!r}")


def build_mime(msg: OutgoingMessage, date: datetime | None = None) -> EmailMessage:
    """Build a ``multipart/alternative`` message (text first, then HTML) with all headers set."""
    mime = EmailMessage(policy=_BODY_POLICY)
    mime["From"] = safe_header(msg.from_)
    mime["To"] = safe_header(msg.to)
    _one_address(mime, "From")
    _one_address(mime, "To")
    if msg.reply_to:
        mime["Reply-To"] = safe_header(msg.reply_to)
    mime["Subject"] = safe_header(msg.subject)
    mime["Date"] = format_datetime(date or datetime.now(timezone.utc))
    mime["Message-ID"] = safe_header(msg.message_id)
    reserved = {"from", "to", "reply-to", "subject", "date", "message-id", "mime-version", "content-type",
                "content-transfer-encoding", "bcc", "cc"}
    for name, value in msg.headers.items():
        name = safe_header(name)
        if not re.fullmatch(r"[!-9;-~]+", name):  # RFC 5322 field name: printable ASCII except ':'
            raise ValueError(f"invalid header name: {name!r}")
        if name.lower() in reserved:
            raise ValueError(f"header {name} is set by build_mime and cannot be overridden")
        del mime[name]  # exactly one of each (RFC 8058 wants one List-Unsubscribe)
        mime[name] = safe_header(value)
    _set_text(mime, msg.text, "plain", add=False)
    _set_text(mime, msg.html, "html", add=True)
    # Bodies are encoded; from here on generate headers with the 998-column policy.
    for part in mime.walk():
        part.policy = POLICY
    return mime


def to_bytes(mime: EmailMessage) -> bytes:
    """Serialize with CRLF line endings and 998-column headers."""
    return mime.as_bytes(policy=POLICY)
