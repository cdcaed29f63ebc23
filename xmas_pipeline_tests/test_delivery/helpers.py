"""Putting leads into the pipeline the way the intake does, for delivery tests."""

from __future__ import annotations

import datetime as dt

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.enrollment import enroll_events
from xmas_pipeline.settings import Settings
from xmas_pipeline.store import inbound
from xmas_pipeline.store.db import engine_for


def signup(settings: Settings, email: str, **fields) -> int:
    engine = engine_for(settings.database_url)
    payload = {"email": email, "first_name": fields.pop("first_name", "Ann"), **fields}
    event = inbound.NewEvent(
        idempotency_key=f"{email}|test", kind="signup", email=email, payload=payload,
        received_at=settings.clock.now(), client_ip="203.0.113.9", user_agent="pytest",
    )
    return inbound.enqueue(engine, event).event_id


def enroll(settings: Settings, *emails: str, **fields):
    ids = [signup(settings, e, **fields) for e in emails]
    return enroll_events(delivery_context(settings), ids)


def later(settings_now: dt.datetime, days: float) -> str:
    return (settings_now + dt.timedelta(days=days)).isoformat()
