"""`xmas preview` writes a step as the lead would get it; `xmas test-send` sends one, marked, recording nothing."""

from __future__ import annotations

import email
import email.policy

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from xmas_pipeline.cli import main as xmas
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.schema import contacts, deliveries
from xmas_pipeline_tests.conftest import free_port
from xmas_pipeline_tests.test_delivery.helpers import enroll


@pytest.fixture
def cli_env(env, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_preview_renders_a_sample_lead_and_a_real_one(cli_env, settings, capsys):
    assert xmas(["preview", "christmas-2026", "2", "--segment", "urgent"]) == 0
    out = capsys.readouterr().out
    html_path = next(line.split(None, 1)[1] for line in out.splitlines() if line.startswith("html:"))
    html = open(html_path, encoding="utf-8").read()
    assert "Ann" in html and "Unsubscribe" in html and "{{" not in html

    enroll(settings, "zoe@example.com", first_name="zoe", red_systems=3)
    assert xmas(["preview", "Christmas 2026", "1", "--email", "zoe@example.com"]) == 0
    text_path = next(line.split(None, 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("text:"))
    assert "Hi Zoe" in open(text_path, encoding="utf-8").read()

    assert xmas(["preview", "pre-call", "1"]) == 0  # a reminder previews with a sample call time
    assert "subject:" in capsys.readouterr().out
    assert xmas(["preview", "nope", "1"]) == 2 and "the journeys are" in capsys.readouterr().err
    assert xmas(["preview", "no-show", "9"]) == 2 and "steps 1 to 3" in capsys.readouterr().err


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


def test_test_send_goes_through_the_configured_smtp_server_and_records_nothing(cli_env, settings, capsys):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        for key, value in {"XMAS_MAILER": "smtp", "XMAS_SMTP_HOST": "127.0.0.1",
                           "XMAS_SMTP_PORT": str(controller.port), "XMAS_SMTP_TLS": "none"}.items():
            cli_env.setenv(key, value)
        assert xmas(["test-send", "onboarding", "1", "--to", "marketer@example.com"]) == 0
    finally:
        controller.stop()
    (message,) = inbox.messages
    assert message["To"] == "marketer@example.com" and message["Subject"].startswith("[TEST] ")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    engine = engine_for(settings.database_url)
    assert count(engine, deliveries) == 0 and count(engine, contacts) == 0
    assert "no ledger row, no CRM write" in capsys.readouterr().out
