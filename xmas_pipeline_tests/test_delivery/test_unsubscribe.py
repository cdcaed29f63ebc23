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


def test_a_hostile_first_name_is_escaped_and_cannot_inject_headers(settings):
    from fastapi.testclient import TestClient as Client

    from xmas_pipeline.backends import delivery_context as context
    from xmas_pipeline.enrollment import enroll_events
    from xmas_pipeline.store import inbound

    with Client(create_app(settings)) as intake:  # `with` runs the lifespan: the queue writer
        answer = intake.post(
            "/webhook/christmas-signup",
            json={"email": "eve@example.com", "first_name": "<b>Eve</b>\r\nBcc: victim@example.com"},
        )
    assert answer.status_code == 202
    enroll_events(context(settings), [answer.json()["event_id"]])
    [eml] = settings.outbox_dir.glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Bcc"] is None and "victim" not in str(message["To"])
    assert message["Subject"].startswith("<b>Eve</b> Bcc: victim@example.com")  # one line, harmless
    html = message.get_body(("html",)).get_content()
    assert "&lt;b&gt;Eve&lt;/b&gt;" in html and "<b>Eve</b>" not in html
    assert inbound.depth(engine_for(settings.database_url)) == {"done": 1}
