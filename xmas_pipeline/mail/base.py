"""The one protocol every sender implements, and the message it is given.

Exactly-once is the delivery path's job (the ledger); a sender's job is to make a retried call with the
same idempotency key harmless: the outbox overwrites the same file, Resend returns the first response,
SMTP puts the key in ``Message-ID`` so receivers can collapse the rare duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence


@dataclass(frozen=True)
class OutgoingMessage:
    """A fully rendered email. Header values are already free of CR/LF (see mail.message)."""

    key: str  # idempotency key from the ledger row; stable across retries
    to: str
    from_: str  # "Name <address>"
    subject: str
    text: str
    html: str
    message_id: str  # "<...@domain>", derived from the key
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # List-Unsubscribe, List-Unsubscribe-Post, ...
    tags: dict[str, str] = field(default_factory=dict)  # provider tags (campaign, step, segment)


@dataclass(frozen=True)
class SendResult:
    key: str
    provider_id: str | None = None
    error: str | None = None  # set when this message was not accepted
    permanent: bool = False  # True: retrying the same message cannot succeed (bad address ...)
    uncertain: bool = False  # True: the answer does not say whether it went (an operator must decide)

    @property
    def ok(self) -> bool:
        return self.error is None


class SendError(Exception):
    """The whole call failed; nothing in it may be assumed delivered or not (retry with the same key)."""


class NotSent(SendError):
    """The whole call failed before the provider accepted anything: safe to try again later."""


class QuotaExceeded(NotSent):
    """The provider refuses more mail for now (daily/monthly quota): stop the run, do not spin."""


class ConfigurationError(NotSent):
    """The provider refuses because of our setup (credentials, unverified sender domain, wrong URL).

    Nothing was sent and nothing will be until a person fixes the setup: the run fails loudly and the
    messages stay retryable, instead of being skipped for good.
    """


class Sender(Protocol):
    #: how many messages one ``send`` call may carry (Resend batches: 100; SMTP, outbox: 1 is plenty)
    max_batch: int
    name: str

    def send(self, batch_key: str, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send ``messages`` (len <= max_batch); one result per message, same order.

        ``batch_key`` identifies this exact group of messages; a retried call carries the same key and the
        same messages. Raises SendError when the outcome of the call is unknown.
        """
        ...
