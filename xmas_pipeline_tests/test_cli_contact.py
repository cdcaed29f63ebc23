"""`xmas contact` says what will actually happen to each step: not "goes with the next run" when no run will."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from xmas_pipeline.cli import main as xmas
from xmas_pipeline.store import ledger, mirror, suppressions
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import deliveries
from xmas_pipeline_tests.test_delivery.helpers import enroll

DAY = dt.timedelta(days=1)


@pytest.fixture
def at(env, monkeypatch):
    """Run `xmas` with the campaign clock at ``now``; returns its output."""
    def run(now: dt.datetime, *args: str, capsys) -> str:
        for key, value in {**env, "XMAS_NOW": now.isoformat()}.items():
            monkeypatch.setenv(key, value)
        assert xmas(["contact", *args]) == 0
        return capsys.readouterr().out

    return run


def step_lines(out: str) -> dict[int, str]:
    return {int(line.split()[1]): line for line in out.splitlines() if line.startswith("  step ")}


def set_status(engine, email: str, step: int, **values) -> None:
    with engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.email == email, deliveries.c.step == step).values(**values))


def test_each_state_is_worded_as_what_will_happen(settings, at, capsys):
    start = settings.clock.now()  # Thursday Nov 5 10:00 in Toronto
    enroll(settings, "kay@example.com", first_name="Kay")
    engine = engine_for(settings.database_url)

    lines = step_lines(at(start + dt.timedelta(hours=1), "kay@example.com", capsys=capsys))
    assert "sent 2026-11-05 10:00 EST via outbox" in lines[1]
    assert "scheduled for 2026-11-07 10:00 EST" in lines[2]

    # Step 2 came due 10 minutes ago: the next tick sends it.
    assert "goes with the next delivery tick" in step_lines(at(start + 2 * DAY + dt.timedelta(minutes=10), "kay@example.com", capsys=capsys))[2]

    # 30 hours after it came due and nothing sent it (the daemon was down): the next tick records it late.
    line = step_lines(at(start + 2 * DAY + dt.timedelta(hours=30), "kay@example.com", capsys=capsys))[2]
    assert "over max_lateness 1 d" in line and "records it late" in line and "backfill 2026-11-07 with send_late: true" in line

    # Recorded late: says so, and how to send it.
    set_status(engine, "kay@example.com", 2, status="late", late_by_s=30 * 3600, reason="late: due 2026-11-07 10:00 EST, reached 1 d 6 h later")
    set_status(engine, "kay@example.com", 3, status="expired", reason="expired: due 2026-12-24 10:00 EST, after the end")
    set_status(engine, "kay@example.com", 4, status="failed", reason="template 'email_4': html: boom")
    set_status(engine, "kay@example.com", 5, status="held", reason="Resend already has a different message under this key")
    lines = step_lines(at(start + 3 * DAY, "kay@example.com", capsys=capsys))
    assert "not sent, late" in lines[2] and "xmas send-due --day 2026-11-07 --send-late" in lines[2]
    assert lines[3].strip().startswith("step 3  will not be sent: expired")
    assert "failed last time (template 'email_4': html: boom)" in lines[4]
    assert "held for a person" in lines[5]

    # Stopped, then unsubscribed: nothing more will go, and it says why.
    key = mirror.sequences_for_email(engine, "kay@example.com")[0]["sequence_key"]
    mirror.set_status(engine, [key], "exited", "booked by phone", start + 3 * DAY)
    assert "will not be sent: sequence exited (booked by phone)" in step_lines(at(start + 3 * DAY, "kay@example.com", capsys=capsys))[6]
    suppressions.suppress(engine, "kay@example.com", "unsubscribed", "test", start + 3 * DAY)
    out = at(start + 3 * DAY, "kay@example.com", capsys=capsys)
    assert "SUPPRESSED (unsubscribed)" in out
