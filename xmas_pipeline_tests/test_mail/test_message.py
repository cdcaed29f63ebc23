"""build_mime: structure, exact RFC 8058 header bytes, header injection, non-ASCII names."""

from __future__ import annotations

import email
import email.policy
from datetime import datetime, timezone

import pytest

from xmas_pipeline.mail.base import OutgoingMessage
from xmas_pipeline.mail.message import (
    build_mime,
    format_address,
    message_id_for,
    safe_header,
    safe_key,
    to_bytes,
)

LONG_UNSUB = "<https://example.com/u/" + "Ab1-" * 64 + ">, <mailto:unsub@example.com?subject=" + "t" * 20 + ">"
ONE_CLICK = "List-Unsubscribe=One-Click"


def make(**overrides) -> OutgoingMessage:
    fields = dict(
        key="xmas-ab12-s3",
        to=format_address("Ada Lovelace", "ada@example.com"),
        from_=format_address("Holiday Shop", "shop@example.com"),
        subject="Season's greetings",
        text="Hello Ada,\nhappy holidays.\n",
        html="<p>Hello Ada,</p><p>happy holidays.</p>",
        message_id=message_id_for("xmas-ab12-s3", "example.com"),
        reply_to="help@example.com",
        headers={"List-Unsubscribe": LONG_UNSUB, "List-Unsubscribe-Post": ONE_CLICK},
    )
    fields.update(overrides)
    return OutgoingMessage(**fields)


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def body(part: email.message.EmailMessage) -> str:
    return part.get_content().replace("\r\n", "\n")  # the wire format is CRLF


def test_multipart_alternative_text_then_html():
    parsed = parse(to_bytes(build_mime(make(), date=datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc))))
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert body(parts[0]) == "Hello Ada,\nhappy holidays.\n"
    assert "<p>Hello Ada,</p>" in body(parts[1])
    assert parsed["Message-ID"] == "<xmas-ab12-s3@example.com>"
    assert parsed["Reply-To"] == "help@example.com"
    assert parsed["Date"] == "Tue, 01 Dec 2026 09:00:00 +0000"
    assert parsed["From"].addresses[0].addr_spec == "shop@example.com"


def test_long_list_unsubscribe_is_byte_exact_and_unfolded():
    assert len(LONG_UNSUB) >= 300
    data = to_bytes(build_mime(make()))
    assert b"\r\nList-Unsubscribe: " + LONG_UNSUB.encode() + b"\r\n" in data
    assert b"\r\nList-Unsubscribe-Post: " + ONE_CLICK.encode() + b"\r\n" in data
    assert b"=?utf-8?" not in data.lower()  # ASCII-only message: nothing may be encoded-word'ed
    assert data.count(b"List-Unsubscribe:") == 1 and data.count(b"List-Unsubscribe-Post:") == 1
    # also when the message is flattened the stdlib way
    assert ("List-Unsubscribe: " + LONG_UNSUB + "\r\n") in str(build_mime(make()))


def test_crlf_cannot_inject_headers():
    msg = make(
        subject="Offer\r\nBcc: victim@example.com",
        to=format_address("Eve\r\nBcc: victim@example.com", "eve@example.com"),
        headers={"List-Unsubscribe": "<https://example.com/u/x>\r\nX-Evil: 1", "List-Unsubscribe-Post": ONE_CLICK},
    )
    parsed = parse(to_bytes(build_mime(msg)))
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    assert "\n" not in parsed["Subject"] and "Bcc: victim" in parsed["Subject"]  # harmless text
    assert [a.addr_spec for a in parsed["To"].addresses] == ["eve@example.com"]


def test_safe_header_strips_controls():
    assert safe_header("a\r\nb\tc\x00d\u2028e\x85f") == "a b c d e f"


def test_non_ascii_and_quoted_display_names():
    to = format_address('Zoë "Z" O\'Brien, Jr.', "zoe@example.com")
    parsed = parse(to_bytes(build_mime(make(to=to, subject="Frohe Weihnachten, Jürgen ☃"))))
    (address,) = parsed["To"].addresses
    assert address.display_name == 'Zoë "Z" O\'Brien, Jr.'
    assert address.addr_spec == "zoe@example.com"
    assert parsed["Subject"] == "Frohe Weihnachten, Jürgen ☃"
    assert format_address("", "a@example.com") == "a@example.com"
    assert format_address("Smith, John", "j@example.com") == '"Smith, John" <j@example.com>'


def test_non_ascii_body_is_quoted_printable_not_8bit():
    data = to_bytes(build_mime(make(text="Grüße\n", html="<p>Grüße</p>")))
    assert data.isascii()
    parsed = parse(data)
    assert [body(p) for p in parsed.iter_parts()] == ["Grüße\n", "<p>Grüße</p>\n"]


def test_one_recipient_only():
    with pytest.raises(ValueError):
        build_mime(make(to="a@example.com, b@example.com"))


def test_message_id_and_safe_key_are_deterministic():
    assert message_id_for("xmas-ab12-s3", "example.com") == "<xmas-ab12-s3@example.com>"
    odd = message_id_for("send/lead 42", "example.com")
    assert odd == message_id_for("send/lead 42", "example.com")
    assert odd.startswith("<send_lead_42-") and odd.endswith("@example.com>")
    assert safe_key("a/b") != safe_key("a_b") and safe_key("a_b") == "a_b"
    assert not safe_key("../etc").startswith(".")
