"""A sender process killed between claiming a ledger row and recording the send: the rerun sends once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from xmas_pipeline.settings import PROJECT_ROOT
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import deliveries
from xmas_pipeline_tests.fakes.resend import ResendEmulator
from xmas_pipeline_tests.test_delivery.helpers import enroll


def _send_due(env: dict, day: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xmas_pipeline.cli", "send-due", "--day", day],
        cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _row(engine) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.select(deliveries).where(deliveries.c.step == 2)).one()


def test_sigkill_after_claim_before_record_then_rerun_sends_exactly_once(env, make_settings):
    settings = make_settings()
    anchor = settings.clock.now()
    # The website sent email 1 itself, so step 2 is the first the pipeline sends.
    enroll(settings, "kill@example.com", email_1_sent_at=anchor.isoformat())
    engine = engine_for(settings.database_url)
    step_two = anchor + dt.timedelta(days=2, hours=1)

    with ResendEmulator(rate_limit=100) as resend:
        resend.hold_after_accept_s = 60  # Resend has the email; the process waits for the answer
        run_env = {
            **env,
            "XMAS_NOW": step_two.isoformat(),
            "XMAS_MAILER": "resend",
            "RESEND_API_KEY": resend.api_key,
            "XMAS_RESEND_API_URL": resend.api_url,
        }
        day = step_two.astimezone(settings_tz(settings)).date().isoformat()
        proc = _send_due(run_env, day)
        deadline = time.time() + 60
        while not resend.sent and time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        assert len(resend.sent) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

        row = _row(engine)
        assert row.status == "claimed" and row.message is not None  # claimed and frozen, never recorded

        resend.hold_after_accept_s = 0
        # A run inside the lease leaves the claim alone (the first run might still be alive) ...
        assert _send_due(run_env, day).wait(60) == 0
        assert _row(engine).status == "claimed"
        # ... after the lease it resumes the claim with the same key and the same bytes.
        rerun = _send_due({**run_env, "XMAS_CLAIM_LEASE_SECONDS": "0"}, day)
        output = rerun.communicate(timeout=60)[0]
        assert rerun.returncode == 0, output

        row = _row(engine)
        assert row.status == "sent"
        assert row.provider_id == resend.sent[0]["id"]
        assert len(resend.sent) == 1, "the provider must not have sent the email a second time"
        assert resend.requests >= 2  # the resumed call did reach the provider, which deduplicated it

        # And a further run has nothing to send.
        assert _send_due({**run_env, "XMAS_CLAIM_LEASE_SECONDS": "0"}, day).wait(60) == 0
        assert len(resend.sent) == 1


def settings_tz(settings):
    from xmas_pipeline.campaign.loader import load_campaign

    return settings.journeys().home.tz
