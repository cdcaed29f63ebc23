"""A one-click POST to a delivered message's List-Unsubscribe URL stops everything for that contact."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re

from fastapi.testclient import TestClient

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.store import mirror, suppressions
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.web.app import create_app
from xmas_pipeline_tests.test_delivery.helpers import enroll
from xmas_pipeline_tests.test_delivery.test_delivery import at, due_on
from xmas_pipeline.delivery import deliver


def test_one_click_unsubscribe_from_a_delivered_message(settings, make_settings):
    enroll(settings, "leaver@example.com", "stayer@example.com")
    [eml] = [p for p in settings.outbox_dir.glob("*.eml")
             if "leaver@example.com" in p.read_text()]
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https = re.match(r"<(http[^>]+)>", message["List-Unsubscribe"]).group(1)
    assert "leaver" not in https  # opaque token, no address in the URL
    assert https.startswith(settings.public_url)

    client = TestClient(create_app(settings))
    path = https[len(settings.public_url):]
    answer = client.post(path, content=b"List-Unsubscribe=One-Click",
                         headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert answer.status_code == 200
    engine = engine_for(settings.database_url)
    assert suppressions.suppressed(engine, ["leaver@example.com"]) == {"leaver@example.com": "unsubscribed"}
    assert mirror.sequences_for_email(engine, "leaver@example.com")[0]["status"] == "exited"

    ctx = delivery_context(at(make_settings, settings.clock.now(), 2))
    report = deliver(ctx, due_on(ctx, 2))
    assert [s["email"] for s in report.sent] == ["stayer@example.com"]

    # The footer carries the same link, visibly, in both parts.
    assert https in message.get_body(("plain",)).get_content()
    assert https.replace("&", "&amp;") in message.get_body(("html",)).get_content()
    # A forged token gets nothing but a 404.
    assert client.post(path[:-3] + "abc", content=b"List-Unsubscribe=One-Click").status_code == 404
