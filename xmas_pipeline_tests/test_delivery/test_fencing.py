"""Fenced claims: a send happens only while its run holds the claim, and each message goes once in total.

Two delivery runs work over the same due rows. The first claims a batch, stalls past its lease (the
clock is moved, nothing sleeps), the second takes the batch over and sends it; when the first wakes up
its fence check fails and it stops, sending nothing more. Through the outbox, a real SMTP server and
the Resend emulator alike.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest
from aiosmtpd.controller import Controller

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.campaign.timetable import campaign_day, day_bounds
from xmas_pipeline.delivery import DeliveryRun, deliver
from xmas_pipeline.mail.base import ConfigurationError
from xmas_pipeline.mail.outbox import OutboxSender
from xmas_pipeline.mail.resend import ResendSender
from xmas_pipeline.mail.smtp import SmtpSender
from xmas_pipeline.store import ledger
from xmas_pipeline.store.db import engine_for
from xmas_pipeline_tests.conftest import free_port
from xmas_pipeline_tests.fakes.resend import ResendEmulator
from xmas_pipeline_tests.test_delivery.helpers import enroll

LEADS = [f"fence{i}@example.com" for i in range(6)]


class Wall:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        return self.now


class Inbox:
    """aiosmtpd handler: every message that reached the server, by its idempotency key header."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        for line in envelope.content.splitlines():
            if line.lower().startswith(b"x-idempotency-key:"):
                self.keys.append(line.split(b":", 1)[1].strip().decode())
        return "250 Message accepted"


@dataclass
class Provider:
    name: str
    make: object  # () -> Sender
    received: object  # () -> list of provider keys, one per message that reached the provider


@pytest.fixture(params=["outbox", "smtp", "resend"])
def provider(request, tmp_path):
    if request.param == "outbox":
        folder = tmp_path / "fence-outbox"
        writes: list[str] = []

        class CountingOutbox(OutboxSender):  # counts file writes: the outbox's "deliveries"
            def send(self, batch_key, messages):
                writes.extend(m.key for m in messages)
                return super().send(batch_key, messages)

        yield Provider("outbox", lambda: CountingOutbox(folder), lambda: writes)
    elif request.param == "smtp":
        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
        controller.start()
        try:
            yield Provider("smtp", lambda: SmtpSender("127.0.0.1", controller.port, tls="none", timeout=5), lambda: inbox.keys)
        finally:
            controller.stop()
    else:
        with ResendEmulator(rate_limit=None) as emulator:
            yield Provider(
                "resend", lambda: ResendSender(api_key=emulator.api_key, api_url=emulator.api_url, sleep=lambda s: None),
                lambda: [m["to"][0] for m in emulator.sent],  # enrollment's email 1 went to the outbox
            )


def owed_now(ctx) -> list[ledger.Due]:
    start, end = day_bounds(ctx.campaign, campaign_day(ctx.campaign, ctx.clock.now()))
    return ledger.dues(ledger.owed(ctx.engine, ctx.campaign.name, start, end, carry_over=True))


def contexts(make_settings, settings, provider, wall, count=2):
    later = make_settings(XMAS_NOW=(settings.clock.now() + dt.timedelta(days=2, minutes=1)).isoformat())
    out = []
    for i in range(count):
        ctx = delivery_context(later, run_id=f"run-{i + 1}")
        ctx.sender = provider.make()
        ctx.sender.max_batch = 4  # two batches: 4 + 2
        ctx.wall = wall
        out.append(ctx)
    return out


def test_a_run_that_lost_its_lease_mid_batch_stops_and_each_message_goes_once(settings, make_settings, provider):
    enroll(settings, *LEADS)
    wall = Wall()
    first, second = contexts(make_settings, settings, provider, wall)
    due = owed_now(first)
    assert sorted(d.email for d in due) == sorted(LEADS)

    run1 = DeliveryRun(first, due)
    run1.prepare()
    assert run1.claim_next() and run1.send_next()  # batch 1: four messages out
    assert run1.claim_next()  # batch 2 claimed, rendered and frozen ...
    wall.now += first.lease + dt.timedelta(seconds=1)  # ... then the run stalls past its lease

    report2 = deliver(second, owed_now(second))  # another run takes the stalled batch over, whole
    assert report2.resumed == 2 and len(report2.sent) == 2

    assert run1.send_next() is False  # the fence: run 1 no longer holds its claims, so it sends nothing
    report1 = run1.finish()
    assert len(report1.sent) == 4 and len(report1.lost) == 2 and "lost the claim" in report1.stopped

    received = provider.received()
    step2 = [k for k in received if "-s2" in k] if provider.name != "resend" else received
    assert len(step2) == 6 and len(set(step2)) == 6, received
    rows = [r for r in ledger.rows_for(first.engine) if r.step == 2]
    assert [r.status for r in rows] == ["sent"] * 6
    assert Counter(r.run_id for r in rows) == {"run-1": 4, "run-2": 2}


def test_an_in_flight_batch_taken_over_is_recognised_by_the_provider(settings, make_settings):
    """The lease runs out while the provider is still answering: the same key and bytes come back once."""
    enroll(settings, *LEADS)
    wall = Wall()
    with ResendEmulator(rate_limit=None, delay_s=1.0) as emulator:
        provider = Provider("resend", lambda: ResendSender(api_key=emulator.api_key, api_url=emulator.api_url), None)
        first, second = contexts(make_settings, settings, provider, wall)
        first.sender.max_batch = second.sender.max_batch = 100
        reports = {}
        thread = threading.Thread(target=lambda: reports.update(one=deliver(first, owed_now(first))))
        thread.start()
        deadline = time.time() + 10
        while emulator.requests == 0 and time.time() < deadline:  # run 1's batch is now with the provider
            time.sleep(0.01)
        wall.now += first.lease + dt.timedelta(seconds=1)
        reports["two"] = deliver(second, owed_now(second))
        thread.join(20)
        assert len(emulator.sent) == 6  # one email each, though both runs handed the batch over
        assert reports["two"].resumed == 6 and len(reports["two"].sent) == 6
        assert len(reports["one"].lost) == 6
    assert [r.status for r in ledger.rows_for(first.engine) if r.step == 2] == ["sent"] * 6


def test_an_in_doubt_batch_is_resumed_with_the_same_key_and_bytes(settings, make_settings):
    enroll(settings, *LEADS)
    wall = Wall()
    with ResendEmulator(rate_limit=None) as emulator:
        provider = Provider("resend", lambda: ResendSender(api_key=emulator.api_key, api_url=emulator.api_url,
                                                           sleep=lambda s: None), None)
        first, second = contexts(make_settings, settings, provider, wall)
        first.sender.max_batch = second.sender.max_batch = 100
        emulator.fail_next(4, status=500, after_accept=True)  # accepted, but every answer is lost
        report = deliver(first, owed_now(first))
        assert len(report.in_doubt) == 6 and report.sent == [] and len(emulator.sent) == 6
        assert deliver(second, owed_now(second)).sent == []  # the lease still runs: nobody touches them
        wall.now += first.lease + dt.timedelta(seconds=1)
        report = deliver(second, owed_now(second))
        assert report.resumed == 6 and len(report.sent) == 6 and report.held == [] and report.skipped == []
        assert len(emulator.sent) == 6  # Resend recognised the batch: same key, same bytes
    assert [r.status for r in ledger.rows_for(first.engine) if r.step == 2] == ["sent"] * 6


def test_configuration_errors_stop_the_run_and_leave_everything_retryable(settings, make_settings):
    enroll(settings, *LEADS)
    wall = Wall()
    with ResendEmulator(rate_limit=None) as emulator:
        provider = Provider("resend", lambda: ResendSender(api_key="re_wrong_key", api_url=emulator.api_url), None)
        (ctx,) = contexts(make_settings, settings, provider, wall, count=1)
        report = deliver(ctx, owed_now(ctx))
        assert report.configuration_error and "RESEND_API_KEY" in report.stopped and report.sent == []
        rows = [r for r in ledger.rows_for(ctx.engine) if r.step == 2]
        # The batch handed over comes back retryable with the reason; the run claimed nothing after it.
        assert sorted(r.status for r in rows) == ["failed"] * 4 + ["scheduled"] * 2
        assert all("RESEND_API_KEY" in r.reason for r in rows if r.status == "failed")
        ctx.sender = ResendSender(api_key=emulator.api_key, api_url=emulator.api_url)  # the operator fixes it
        assert len(deliver(ctx, owed_now(ctx)).sent) == 6
        assert len(emulator.sent) == 6


def test_an_unverified_sender_domain_is_a_configuration_error(settings, make_settings):
    with ResendEmulator(rate_limit=None) as emulator:
        emulator.fail_next(1, status=403, name="validation_error")
        sender = ResendSender(api_key=emulator.api_key, api_url=emulator.api_url)
        from xmas_pipeline.mail.base import OutgoingMessage

        message = OutgoingMessage(key="k", to="a@example.com", from_="S <s@example.com>", subject="s", text="t",
                                  html="<p>t</p>", message_id="<k@example.com>")
        with pytest.raises(ConfigurationError, match="verify the sender's domain"):
            sender.send("k", [message])


def test_xmas_retry_puts_skipped_steps_back(settings, make_settings, monkeypatch, env, capsys):
    from xmas_pipeline.cli import main as xmas

    enroll(settings, *LEADS[:2])
    engine = engine_for(settings.database_url)
    rows = [r for r in ledger.rows_for(engine) if r.step == 2]
    ledger.mark_skipped(engine, [(ledger.Due(r.id, r.sequence_key, 2, r.email, r.due_at), "refused by smtp: 550 relay denied")
                                 for r in rows])
    for key, value in {**env, "XMAS_NOW": (settings.clock.now() + dt.timedelta(days=5)).isoformat()}.items():
        monkeypatch.setenv(key, value)
    assert xmas(["retry"]) == 2
    assert xmas(["retry", "--skipped", "--reason", "RELAY", "--day", "2026-11-07"]) == 0
    assert "2 step(s) put back" in capsys.readouterr().out
    # Three days late now, but put back by an operator: the next run sends them.
    assert xmas(["send-due"]) == 0
    assert sorted(r.status for r in ledger.rows_for(engine) if r.step == 2) == ["sent", "sent"]
    assert len([p for p in os.listdir(settings.outbox_dir) if "-s2" in p]) == 2


class HookedResend(ResendSender):
    """A Resend sender that runs ``hooks[n]`` (in the sending thread) just before its n-th call (1-based)."""

    def __init__(self, *args, hooks: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hooks = hooks
        self.calls: list[list[str]] = []  # provider keys per call

    def send(self, batch_key, messages):
        self.calls.append([m.key for m in messages])
        hook = self.hooks.get(len(self.calls))
        if hook is not None:
            hook()
        return super().send(batch_key, messages)


def test_a_configuration_error_mid_run_leaves_the_batch_waiting_behind_it_unsent_and_retryable(settings, make_settings):
    """Pipelined: batch 3 is frozen and queued while batch 2 is refused; the courier never hands it over."""
    enroll(settings, *LEADS)
    wall = Wall()
    with ResendEmulator(rate_limit=None) as emulator:
        plain = lambda: ResendSender(emulator.api_key, api_url=emulator.api_url, sleep=lambda s: None)  # noqa: E731
        (ctx,) = contexts(make_settings, settings, Provider("resend", plain, None), wall, count=1)
        ctx.sender = HookedResend(emulator.api_key, api_url=emulator.api_url, sleep=lambda s: None,
                                  hooks={2: lambda: emulator.fail_next(1, status=403, name="validation_error")})
        ctx.sender.max_batch = 2  # three batches: the first alone, then two pipelined
        report = deliver(ctx, owed_now(ctx))
        assert report.configuration_error and "verify the sender's domain" in report.stopped
        assert len(ctx.sender.calls) == 2 and len(emulator.sent) == 2  # batch 3 never reached the provider
        rows = [r for r in ledger.rows_for(ctx.engine) if r.step == 2]
        assert sorted(r.status for r in rows) == ["failed"] * 4 + ["sent"] * 2
        assert all("verify the sender's domain" in r.reason and r.message is None for r in rows if r.status == "failed")
        ctx.sender = plain()  # the operator fixes the setup
        assert len(deliver(ctx, owed_now(ctx)).sent) == 4
        assert len(emulator.sent) == 6 and len({m["to"][0] for m in emulator.sent}) == 6


def test_a_batch_whose_fence_aged_behind_a_slow_call_is_fenced_again_and_not_sent_once_lost(settings, make_settings):
    """Batch 3 waits behind batch 2; batch 2's call stalls past the lease and another run takes both over.

    The courier finds batch 3's fence too old and hands it back unsent; run 1, which learned from batch 2's
    settle that it lost its claims, stops. Run 1 never hands batch 3 over: on a provider without
    idempotency keys that would be a second copy.
    """
    enroll(settings, *LEADS)
    wall = Wall()
    with ResendEmulator(rate_limit=None) as emulator:
        plain = lambda: ResendSender(emulator.api_key, api_url=emulator.api_url, sleep=lambda s: None)  # noqa: E731
        first, second = contexts(make_settings, settings, Provider("resend", plain, None), wall)
        reports = {}

        def stall_past_the_lease():
            deadline = time.time() + 10  # until run 1 has frozen batch 3 behind this call
            while time.time() < deadline and sum(r.message is not None for r in ledger.rows_for(first.engine)
                                                  if r.step == 2 and r.status == "claimed") < 4:
                time.sleep(0.01)
            wall.now += first.lease + dt.timedelta(seconds=1)
            reports["two"] = deliver(second, owed_now(second))

        first.sender = HookedResend(emulator.api_key, api_url=emulator.api_url, sleep=lambda s: None,
                                    hooks={2: stall_past_the_lease})
        first.sender.max_batch = second.sender.max_batch = 2
        report = deliver(first, owed_now(first))
        assert reports["two"].resumed == 4 and len(reports["two"].sent) == 4
        assert len(first.sender.calls) == 2  # batches 1 and 2; batch 3's stale fence failed on renewal
        # Batch 2 reached the provider twice under one key (Resend kept one copy); its settle found the loss.
        assert len(report.sent) == 4 and len(report.lost) == 2 and "lost the claim" in report.stopped
        assert len(emulator.sent) == 6 and len({m["to"][0] for m in emulator.sent}) == 6
    rows = [r for r in ledger.rows_for(first.engine) if r.step == 2]
    assert [r.status for r in rows] == ["sent"] * 6
    assert Counter(r.run_id for r in rows) == {"run-1": 2, "run-2": 4}
