"""What the OpenAPI schema promises for each answer of the intake: every status a route can return,
with its body. The schemathesis test holds the app to it (no undocumented status, no body that breaks
its schema), so change a handler and its entry here together."""

from __future__ import annotations

from typing import Any

from xmas_pipeline.web.security import CALLER_KEY_PATTERN, MAX_CALLER_KEY

RETRY_AFTER_S = 60  # mail clients and webhook senders wait at least this long before retrying


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


ERROR = _object({"error": {"type": "string"}})
ACCEPTED = _object({"event_id": {"type": "integer"}, "duplicate": {"type": "boolean"}})
INVALID = _object(
    {
        "detail": {
            "type": "array",
            "items": _object(
                {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                }
            ),
        }
    }
)
HEALTH = _object(
    {
        "status": {"enum": ["ok", "degraded"]},
        "database": {"enum": ["ok", "unavailable"]},
        "writer": {"enum": ["ok", "stopped"]},
        "queue": {"type": "object", "additionalProperties": {"type": "integer"}},
    }
)
RESEND_RESULT = {
    "oneOf": [
        _object(
            {
                "event": {"enum": ["delivered", "opened", "clicked", "bounced", "soft_bounced", "complained"]},
                "recorded": {"type": "boolean"},  # the message is one of ours (its email_id is on the ledger)
                "suppressed": {"type": "array", "items": {"type": "string"}},
                "duplicate": {"type": "boolean"},  # this svix-id was recorded before: nothing changed
            }
        ),
        _object({"ignored": {"type": "string"}}),
    ]
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


def json_answer(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def text_answer(description: str, media_type: str = "text/plain", **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}, **extra}


SIGNUP_PARAMETERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": (
            f"1 to {MAX_CALLER_KEY} visible ASCII characters, no spaces. A retry with the same key and the "
            "same body is answered `duplicate: true`; the same key with another body is 409. Keys are "
            "per email address. Ignored when signatures are on: then `webhook-id` is the key."
        ),
        "schema": {"type": "string", "pattern": CALLER_KEY_PATTERN},
    },
    {
        "name": "webhook-id",
        "in": "header",
        "required": False,
        "description": "Standard Webhooks message id (signed); the idempotency key when XMAS_WEBHOOK_SECRET is set.",
        "schema": {"type": "string"},
    },
    {"name": "webhook-timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
    {"name": "webhook-signature", "in": "header", "required": False, "schema": {"type": "string"}},
]

SIGNUP_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: json_answer("Stored durably (`duplicate: true`: already stored, nothing new); retrying is safe", ACCEPTED),
    401: json_answer("Signatures are on and this one is missing, invalid or older than 5 minutes", ERROR),
    409: json_answer("This idempotency key was already used with a different body; nothing was stored", ERROR),
    413: json_answer("Body over 64 KiB", ERROR),
    415: json_answer("Content-Type is not application/json (charset utf-8 is allowed)", ERROR),
    422: json_answer("Invalid JSON, fields or headers, every problem listed; nothing was stored", INVALID),
    503: json_answer("The database is unavailable; nothing was stored, retry later", ERROR, headers=RETRY_AFTER),
}

TOKEN_PARAMETER = {
    "name": "token",
    "in": "path",
    "required": True,
    "description": "The token from the email's unsubscribe link.",
    "schema": {"type": "string"},
}
NOT_FOUND = text_answer("Unknown, malformed or forged token (one answer for all)")
UNAVAILABLE = text_answer("The database is unavailable; nothing changed, retry", headers=RETRY_AFTER)

UNSUBSCRIBE_PAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: text_answer("A confirmation page with one button", "text/html"),
    404: NOT_FOUND,
    503: UNAVAILABLE,
}
UNSUBSCRIBE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: text_answer("Unsubscribed (also when already unsubscribed)", "text/html"),
    404: NOT_FOUND,
    503: UNAVAILABLE,
}
# Any POST to a valid token unsubscribes, whatever its body (a garbled form from a mail client must
# not lose the unsubscribe); the body only tells a mail client (`List-Unsubscribe=One-Click`) from the page.
UNSUBSCRIBE_BODY = {
    "required": False,
    "description": "`List-Unsubscribe=One-Click` from a mail client (RFC 8058), `confirm=yes` from the page; "
    "any other body unsubscribes all the same.",
    "content": {media: {"schema": {}} for media in ("application/x-www-form-urlencoded", "multipart/form-data")},
}

HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_answer("Everything is up; queue depth by status", HEALTH),
    503: json_answer("A dependency is down: `database` or `writer` says which", HEALTH),
}

RESEND_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_answer("Recorded once per svix-id (email.delivered, opened, clicked, bounced, complained), or "
                     "ignored (an event type we do not act on)", RESEND_RESULT),
    401: json_answer("Missing or invalid Svix signature", ERROR),
    413: json_answer("Body over 64 KiB", ERROR),
    415: json_answer("Content-Type is not application/json", ERROR),
    422: json_answer("Not a JSON object with `type` and `data`", ERROR),
    503: json_answer(
        "RESEND_WEBHOOK_SECRET is not configured, or the database is unavailable; retry", ERROR, headers=RETRY_AFTER
    ),
}
RESEND_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["type", "data"],
                "properties": {"type": {"type": "string"}, "data": {"type": "object"}},
            }
        }
    },
}

STORED_EVENTS = _object(
    {
        "events": {
            "type": "array",
            "items": _object({"event_id": {"type": "integer"}, "kind": {"type": "string"}, "duplicate": {"type": "boolean"}}),
        }
    }
)
CAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: json_answer("A trigger no journey uses (PING, BOOKING_REQUESTED, ...): nothing stored", _object({"ignored": {"type": "string"}})),
    202: json_answer("Stored durably, one event per person it concerns (`duplicate: true`: a replay, nothing new)",
                     STORED_EVENTS),
    400: json_answer("Not a Cal.com webhook we can act on (no booking uid, attendee or start time)", ERROR),
    401: json_answer("Missing or invalid x-cal-signature-256", ERROR),
    413: json_answer("Body over 64 KiB", ERROR),
    415: json_answer("Content-Type is not application/json", ERROR),
    503: json_answer("XMAS_CAL_SECRET is not configured, or the database is unavailable; retry", ERROR,
                     headers=RETRY_AFTER),
}
CAL_PARAMETERS = [
    {
        "name": "x-cal-signature-256",
        "in": "header",
        "required": False,
        "description": "Lowercase hex HMAC-SHA256 of the raw body with the webhook's secret (XMAS_CAL_SECRET).",
        "schema": {"type": "string"},
    }
]
CAL_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["triggerEvent"],
                "properties": {"triggerEvent": {"type": "string"}, "createdAt": {"type": "string"},
                               "payload": {"type": "object"}},
            }
        }
    },
}
EVENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: json_answer("Stored durably (`duplicate: true`: already stored, nothing new); retrying is safe", ACCEPTED),
    401: json_answer("Signatures are on and this one is missing, invalid or older than 5 minutes", ERROR),
    409: json_answer("This idempotency key was already used with a different body; nothing was stored", ERROR),
    413: json_answer("Body over 64 KiB", ERROR),
    415: json_answer("Content-Type is not application/json (charset utf-8 is allowed)", ERROR),
    422: json_answer("Unknown type, invalid JSON or fields, every problem listed; nothing was stored", INVALID),
    503: json_answer("The database is unavailable; nothing was stored, retry later", ERROR, headers=RETRY_AFTER),
}


def event_body_schema() -> dict[str, Any]:
    """The /webhook/event body: one of the journey events, told apart by ``type`` (inlined, no $refs)."""
    from xmas_pipeline.campaign.models import CallOutcome, Payment

    return {"oneOf": [CallOutcome.model_json_schema(), Payment.model_json_schema()],
            "discriminator": {"propertyName": "type"}}
