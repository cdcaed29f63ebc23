"""ResendSender against ResendEmulator over real HTTP: idempotency, batches, rate limits, quotas, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from xmas_pipeline.mail.base import ConfigurationError, OutgoingMessage, QuotaExceeded, SendError
from xmas_pipeline.mail.message import message_id_for
from xmas_pipeline.mail.resend import ResendSender
from xmas_pipeline_tests.fakes.resend import ResendEmulator

UNSUB = "<https://example.com/u/tok-123>, <mailto:unsub@example.com?subject=tok-123>"


class Sleeps:
    """Injected ``sleep``: records every wait; really sleeps only when ``real`` (rate-limit tests)."""

    def __init__(self, real: bool = False) -> None:
        self.real = real
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)


def make(key: str, subject: str = "Season's greetings", to: str = "ada@example.com") -> OutgoingMessage:
    return OutgoingMessage(
        key=key,
        to=f"Ada <{to}>",
        from_="Holiday Shop <shop@example.com>",
        subject=subject,
        text="Hello Ada",
        html="<p>Hello Ada</p>",
        message_id=message_id_for(key, "example.com"),
        reply_to="help@example.com",
        headers={"List-Unsubscribe": UNSUB, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        tags={"campaign": "xmas 2026!", "step": "s3"},
    )


@pytest.fixture()
def emu() -> Iterator[ResendEmulator]:
    with ResendEmulator(rate_limit=None) as emulator:
        yield emulator


def sender_for(emu: ResendEmulator, sleep: Sleeps | None = None, **kwargs) -> ResendSender:
    return ResendSender(emu.api_key, api_url=emu.api_url, timeout=5, sleep=sleep or Sleeps(), **kwargs)


def test_single_email_fields(emu):
    (result,) = sender_for(emu).send("batch-1", [make("xmas-ab12-s3")])
    assert result.ok and result.key == "xmas-ab12-s3"
    (sent,) = emu.sent
    assert sent["id"] == result.provider_id
    assert sent["to"] == ["Ada <ada@example.com>"] and sent["reply_to"] == "help@example.com"
    assert sent["headers"] == {"List-Unsubscribe": UNSUB, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert sent["tags"] == [{"name": "campaign", "value": "xmas_2026_"}, {"name": "step", "value": "s3"}]
    assert sent["idempotency_key"] == "xmas-ab12-s3" and sent["batch"] is False


def test_same_key_same_body_returns_first_id_and_sends_nothing_new(emu):
    sender = sender_for(emu)
    first = sender.send("b", [make("k-1")])
    again = sender.send("b", [make("k-1")])
    assert again[0].provider_id == first[0].provider_id
    assert len(emu.sent) == 1 and emu.requests == 2

    batch = [make(f"k-{i}") for i in range(2, 5)]
    ids = [r.provider_id for r in sender.send("batch-A", batch)]
    assert [r.provider_id for r in sender.send("batch-A", batch)] == ids
    assert len(emu.sent) == 4


def test_lost_response_is_retried_with_the_same_key(emu):
    sleeps = Sleeps()
    emu.fail_next(1, status=500, after_accept=True)  # accepted, but the client sees a 500
    (result,) = sender_for(emu, sleeps).send("b", [make("k-lost")])
    assert result.ok and result.provider_id == emu.sent[0]["id"]
    assert len(emu.sent) == 1 and emu.requests == 2 and sleeps.waits == [1.0]


def test_same_key_other_body_is_uncertain_never_a_skip(emu):
    """Resend holds another message under the key: it may have gone, so neither resend nor skip is safe."""
    sender = sender_for(emu)
    assert sender.send("b", [make("k-1", subject="first")])[0].ok
    (result,) = sender.send("b", [make("k-1", subject="changed")])
    assert not result.ok and result.uncertain and not result.permanent and "invalid_idempotent_request" in result.error
    batch = [make("a"), make("b")]
    assert all(r.ok for r in sender.send("batch-X", batch))
    results = sender.send("batch-X", [make("a"), make("c", subject="other")])
    assert all(r.uncertain and "xmas retry --held" in r.error for r in results)
    assert len(emu.sent) == 3


def test_concurrent_same_key_waits_then_gets_first_response():
    with ResendEmulator(rate_limit=None, delay_s=0.4) as emu:
        first: list = []
        thread = threading.Thread(target=lambda: first.extend(sender_for(emu).send("b", [make("k-c")])))
        thread.start()
        time.sleep(0.1)  # the first request is now in flight
        sleeps = Sleeps(real=True)
        (result,) = sender_for(emu, sleeps).send("b", [make("k-c")])
        thread.join()
        assert result.provider_id == first[0].provider_id and len(emu.sent) == 1
        assert sleeps.waits == [1.0]  # one 409 concurrent_idempotent_requests, then the stored answer


def test_250_messages_use_three_batch_calls(emu):
    sender = sender_for(emu)
    messages = [make(f"m-{i}", to=f"lead{i}@example.com") for i in range(250)]
    results = []
    for start in range(0, len(messages), sender.max_batch):
        results += sender.send(f"run-1/{start}", messages[start:start + sender.max_batch])
    assert emu.requests == 3 and len(emu.sent) == 250 and all(s["batch"] for s in emu.sent)
    assert [r.key for r in results] == [m.key for m in messages]
    assert [r.provider_id for r in results] == [s["id"] for s in emu.sent]
    assert emu.sent[249]["to"] == ["Ada <lead249@example.com>"]


def test_invalid_email_in_batch_fails_alone(emu):
    results = sender_for(emu).send("b", [make("ok-1"), make("bad", to="not-an-address"), make("ok-2")])
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].permanent and "not-an-address" in results[1].error
    assert [s["id"] for s in emu.sent] == [results[0].provider_id, results[2].provider_id]


def test_429_retry_after_is_waited_out():
    with ResendEmulator(rate_limit=1) as emu:
        other = sender_for(emu)  # shares the API key, so it spends the same budget
        assert other.send("b", [make("k-other")])[0].ok
        sleeps = Sleeps(real=True)
        (result,) = sender_for(emu, sleeps).send("b", [make("k-1")])
        assert result.ok and emu.rate_limited == 1
        assert sleeps.waits == [1.0]  # from retry-after
        assert len(emu.sent) == 2


def test_pacing_on_ratelimit_headers_avoids_429():
    with ResendEmulator(rate_limit=2) as emu:
        sleeps = Sleeps(real=True)
        sender = sender_for(emu, sleeps)
        for i in range(5):
            assert sender.send(f"b{i}", [make(f"k-{i}a"), make(f"k-{i}b")])[0].ok
        assert emu.rate_limited == 0 and emu.requests == 5 and len(emu.sent) == 10
        assert len(sleeps.waits) == 2  # after calls 2 and 4 the budget was spent


def test_rate_limit_budget_exhausted_raises():
    with ResendEmulator(rate_limit=1) as emu:
        requests.post(emu.api_url + "/emails", headers={"Authorization": f"Bearer {emu.api_key}"}, json={})
        sender = sender_for(emu, Sleeps(), max_wait_s=2)  # fake sleep: the window never resets
        with pytest.raises(SendError, match="rate_limit_exceeded"):
            sender.send("b", [make("k-1")])
        assert emu.sent == []


def test_quota_exceeded_raises_without_retry():
    with ResendEmulator(rate_limit=None, daily_quota=1) as emu:
        sender = sender_for(emu)
        assert sender.send("b", [make("k-1")])[0].ok
        with pytest.raises(QuotaExceeded, match="daily quota"):
            sender.send("b2", [make("k-2"), make("k-3")])
        assert emu.requests == 2 and len(emu.sent) == 1


def test_server_errors_retry_then_raise(emu):
    sleeps = Sleeps()
    emu.fail_next(2)
    assert sender_for(emu, sleeps).send("b", [make("k-1")])[0].ok
    assert sleeps.waits == [1.0, 2.0]
    emu.fail_next(10)
    with pytest.raises(SendError, match="internal_server_error"):
        sender_for(emu).send("b", [make("k-2")])
    assert len(emu.sent) == 1


def test_bad_api_key_and_unreachable_server(emu):
    bad = ResendSender("re_wrong", api_url=emu.api_url, timeout=5, sleep=Sleeps())
    with pytest.raises(ConfigurationError, match="API key"):
        bad.send("b", [make("k-1")])
    gone = ResendSender("re_x", api_url="http://127.0.0.1:9", timeout=1, sleep=Sleeps())
    with pytest.raises(SendError, match="unreachable"):
        gone.send("b", [make("k-1")])
