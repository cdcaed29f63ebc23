"""SmtpSender against a real aiosmtpd server on loopback: STARTTLS + AUTH, implicit TLS, refusals."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
from collections.abc import Iterator

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from xmas_pipeline.mail.base import ConfigurationError, NotSent, OutgoingMessage, SendError
from xmas_pipeline.mail.message import message_id_for
from xmas_pipeline.mail.smtp import SmtpSender

# aiosmtpd warns "AUTH without TLS" for implicit TLS, which it does not count as TLS; it is encrypted.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

USER, PASSWORD = "resend", "re_secret_example"
UNSUB = "<https://example.com/u/" + "x" * 200 + ">, <mailto:unsub@example.com?subject=x>"


class Capture:
    """aiosmtpd handler that records messages and refuses some recipients."""

    def __init__(self) -> None:
        self.messages: list[tuple[tuple, bytes, list[str]]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@"):
            return "451 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append((session.peer, envelope.content, list(envelope.rcpt_tos)))
        return "250 Message accepted"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


def free_port() -> int:
    # aiosmtpd 1.4.6's Controller cannot bind port 0 (its readiness probe fails), so pick one first.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest.fixture()
def starttls_server(tls) -> Iterator[tuple[Controller, Capture]]:
    handler = Capture()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=tls[0],
                            require_starttls=True, authenticator=authenticator, auth_required=True)
    controller.start()
    yield controller, handler
    controller.stop()


@pytest.fixture()
def implicit_tls_server(tls) -> Iterator[tuple[Controller, Capture]]:
    handler = Capture()
    # auth_require_tls=False: aiosmtpd only knows about STARTTLS; this connection is TLS from the start.
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), ssl_context=tls[0],
                            authenticator=authenticator, auth_required=True, auth_require_tls=False)
    controller.start()
    yield controller, handler
    controller.stop()


def make(key: str, to: str = "ada@example.com") -> OutgoingMessage:
    return OutgoingMessage(
        key=key,
        to=f"Ada <{to}>",
        from_="Holiday Shop <shop@example.com>",
        subject="Season's greetings",
        text="Hello Ada",
        html="<p>Hello Ada</p>",
        message_id=message_id_for(key, "example.com"),
        headers={"List-Unsubscribe": UNSUB, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )


def check_received(content: bytes, key: str) -> None:
    assert b"\r\nList-Unsubscribe: " + UNSUB.encode() + b"\r\n" in content
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in content
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["Message-ID"] == f"<{key}@example.com>"
    assert parsed["X-Idempotency-Key"] == key


def test_starttls_and_auth_one_connection_per_call(starttls_server, tls):
    controller, handler = starttls_server
    sender = SmtpSender("127.0.0.1", controller.port, USER, PASSWORD, tls="starttls", timeout=5, ssl_context=tls[1])
    results = sender.send("batch-1", [make("k-1"), make("k-2", "bob@example.com")])
    assert [r.ok for r in results] == [True, True]
    assert results[0].provider_id == "<k-1@example.com>"
    assert len(handler.messages) == 2
    assert handler.messages[0][0] == handler.messages[1][0]  # same client socket: connection reused
    check_received(handler.messages[0][1], "k-1")
    assert handler.messages[1][2] == ["bob@example.com"]


def test_refusals_are_per_message(starttls_server, tls):
    controller, handler = starttls_server
    sender = SmtpSender("127.0.0.1", controller.port, USER, PASSWORD, timeout=5, ssl_context=tls[1])
    results = sender.send("batch-2", [make("k-1"), make("k-2", "nobody@example.com"),
                                      make("k-3", "busy@example.com"), make("k-4")])
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].permanent and "550" in results[1].error
    assert not results[2].permanent and "451" in results[2].error
    assert len(handler.messages) == 2


def test_implicit_tls(implicit_tls_server, tls):
    controller, handler = implicit_tls_server
    sender = SmtpSender("127.0.0.1", controller.port, USER, PASSWORD, tls="ssl", timeout=5, ssl_context=tls[1])
    assert sender.send("b", [make("k-ssl")])[0].ok
    check_received(handler.messages[0][1], "k-ssl")


def test_wrong_password_names_credentials(starttls_server, tls):
    controller, handler = starttls_server
    sender = SmtpSender("127.0.0.1", controller.port, USER, "wrong", timeout=5, ssl_context=tls[1])
    with pytest.raises(ConfigurationError, match="credentials"):
        sender.send("b", [make("k-1")])
    assert handler.messages == []


def test_wrong_tls_mode_and_closed_port(starttls_server, tls):
    controller, _ = starttls_server
    wrong_mode = SmtpSender("127.0.0.1", controller.port, USER, PASSWORD, tls="ssl", timeout=5, ssl_context=tls[1])
    with pytest.raises(ConfigurationError, match="TLS mode"):
        wrong_mode.send("b", [make("k-1")])
    untrusted = SmtpSender("127.0.0.1", controller.port, USER, PASSWORD, timeout=5)  # system CAs only
    with pytest.raises(ConfigurationError, match="certificate"):
        untrusted.send("b", [make("k-1")])
    closed = SmtpSender("127.0.0.1", free_port(), timeout=5)
    with pytest.raises(NotSent, match="host, the port"):
        closed.send("b", [make("k-1")])
