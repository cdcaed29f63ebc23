"""A sender for any SMTP relay (Resend's SMTP, a company relay, a local test server)."""

from __future__ import annotations

import smtplib
import ssl
from typing import Literal, Sequence

from xmas_pipeline.mail.base import ConfigurationError, NotSent, OutgoingMessage, SendResult
from xmas_pipeline.mail.message import build_mime, safe_header, to_bytes

TlsMode = Literal["starttls", "ssl", "none"]


class SmtpSender:
    """Send each message over one SMTP connection per ``send`` call (STARTTLS, implicit TLS or plain)."""

    max_batch = 50
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        user: str | None = None,
        password: str | None = None,
        tls: TlsMode = "starttls",
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if tls not in ("starttls", "ssl", "none"):
            raise ValueError(f"tls must be 'starttls', 'ssl' or 'none', got {tls!r}")
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.tls = tls
        self.timeout = timeout
        self.ssl_context = ssl_context

    # -- connection -----------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"SMTP server {self.host}:{self.port} (tls={self.tls!r})"

    def _connect(self) -> smtplib.SMTP:
        """Open, secure and authenticate a connection, or raise SendError saying what to check."""
        context = self.ssl_context or ssl.create_default_context()
        conn: smtplib.SMTP | None = None
        try:
            if self.tls == "ssl":
                conn = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            conn.ehlo()
            if self.tls == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if self.user:
                conn.login(self.user, self.password or "")
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            _close(conn)
            raise ConfigurationError(
                f"{self._where()} refused the login for user {self.user!r} "
                f"({exc.smtp_code} {_text(exc.smtp_error)}): check the SMTP username and password (credentials)"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            _close(conn)
            if self.tls == "starttls" and "STARTTLS" in str(exc):
                hint = "the server does not offer STARTTLS: check the TLS mode (port 465 needs tls='ssl')"
            else:
                hint = "the server does not offer AUTH: check the TLS mode and whether this server needs a login"
            raise ConfigurationError(f"{self._where()}: {hint} ({exc})") from exc
        except ssl.SSLError as exc:
            _close(conn)
            raise ConfigurationError(
                f"TLS failed with {self._where()}: {exc}. Check the TLS mode (465 = 'ssl', 587 = 'starttls') "
                f"and that the server certificate is trusted for {self.host!r}"
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            _close(conn)
            # Nothing was handed over yet, so the messages can simply be tried again later.
            raise NotSent(
                f"cannot talk to {self._where()}: {exc!r}. Check the host, the port and the TLS mode "
                f"(465 = 'ssl', 587 = 'starttls')"
            ) from exc

    # -- sending --------------------------------------------------------------------------------------

    def send(self, batch_key: str, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if len(messages) > self.max_batch:
            raise ValueError(f"smtp takes at most {self.max_batch} messages per call, got {len(messages)}")
        if not messages:
            return []
        conn = self._connect()
        results: list[SendResult] = []
        try:
            for index, msg in enumerate(messages):
                try:
                    results.append(self._send_one(conn, msg))
                except ConfigurationError as exc:
                    if index == 0:
                        raise
                    # Earlier messages were accepted and must be recorded as sent: the rest wait for the
                    # next run, whose first message will raise this again if the setup is still wrong.
                    results.extend(SendResult(key=m.key, error=str(exc)) for m in messages[index:])
                    break
                except smtplib.SMTPServerDisconnected as exc:
                    # Messages already accepted stay accepted; the one in flight and the rest are unknown
                    # or unsent, so they get a transient error and are retried with the same key (the
                    # Message-ID lets receivers collapse a rare duplicate).
                    reason = f"connection to {self._where()} lost: {exc}"
                    results.extend(SendResult(key=m.key, error=reason) for m in messages[index:])
                    break
        finally:
            _quit(conn)
        return results

    def _send_one(self, conn: smtplib.SMTP, msg: OutgoingMessage) -> SendResult:
        mime = build_mime(msg)
        # Generic header (not Resend-specific) so logs and receivers can trace a message to its ledger row.
        mime["X-Idempotency-Key"] = safe_header(msg.key)
        sender = mime["From"].addresses[0].addr_spec
        recipient = mime["To"].addresses[0].addr_spec
        options: list[str] = []
        if not (sender.isascii() and recipient.isascii()):
            if not conn.has_extn("smtputf8"):
                return SendResult(key=msg.key, error="non-ASCII address but the server lacks SMTPUTF8",
                                  permanent=True)
            options.append("SMTPUTF8")
        try:
            refused = conn.sendmail(sender, [recipient], to_bytes(mime), mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b"recipient refused"))
            return _refusal(msg, f"recipient {recipient} refused", code, text)
        except smtplib.SMTPSenderRefused as exc:
            if 500 <= exc.smtp_code < 600:
                # MAIL FROM refused for good: true of every message from this sender, not of this recipient.
                raise ConfigurationError(
                    f"{self._where()} refuses the sender address {sender} ({exc.smtp_code} {_text(exc.smtp_error)}): "
                    f"fix the campaign's sender.email or the server's relay permissions"
                ) from exc
            return _refusal(msg, f"sender {sender} refused", exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPDataError as exc:
            return _refusal(msg, "message refused", exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPResponseException as exc:
            return _refusal(msg, "command refused", exc.smtp_code, exc.smtp_error)
        if refused:  # only possible with several recipients; kept for completeness
            code, text = next(iter(refused.values()))
            return _refusal(msg, f"recipient {recipient} refused", code, text)
        return SendResult(key=msg.key, provider_id=msg.message_id)


def _refusal(msg: OutgoingMessage, what: str, code: int, text: bytes | str) -> SendResult:
    # 5xx: the server will never take this message as it is; 4xx (greylisting, mailbox busy): try later.
    return SendResult(key=msg.key, error=f"{what}: {code} {_text(text)}", permanent=500 <= code < 600)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _quit(conn: smtplib.SMTP) -> None:
    try:
        conn.quit()
    except (OSError, smtplib.SMTPException):
        _close(conn)


def _close(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
