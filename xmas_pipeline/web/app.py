"""The intake web app: the website's signup webhook, RFC 8058 unsubscribe, Resend webhooks and health.

Run it with ``uvicorn --factory xmas_pipeline.web.app:create_app`` (settings come from the environment).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from xmas_pipeline.campaign.clock import parse_instant
from xmas_pipeline.campaign.models import JourneyEventBody, SignupPayload
from xmas_pipeline.campaign.tokens import verify_unsubscribe_token
from xmas_pipeline.settings import Settings, load_settings
from xmas_pipeline.store import engagement
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.store.inbound import NewEvent, depth, payload_of
from xmas_pipeline.store.ledger import record_provider_event
from xmas_pipeline.store.mirror import email_for_sequence
from xmas_pipeline.store.suppressions import suppress
from xmas_pipeline.web import openapi as docs
from xmas_pipeline.web.calcom import (
    SIGNATURE_HEADER as CAL_SIGNATURE,
    CalPayloadError,
    Ignored,
    interpret,
    parse_cal_webhook,
    verify_cal_signature,
)
from xmas_pipeline.web.security import (
    CALLER_KEY,
    MAX_CALLER_KEY,
    caller_key,
    client_ip,
    is_json,
    redact_access_logs,
    verify_signature,
    webhook_verifiers,
)
from xmas_pipeline.web.writer import GroupCommitWriter

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
HARD_BOUNCE_TYPES = {"permanent"}  # Resend's data.bounce.type; a missing type is treated as hard too


SIGNUP_PATH = "/webhook/christmas-signup"
SIGNUP_HEADERS = (
    b"content-length", b"content-type", b"idempotency-key", b"x-forwarded-for", b"user-agent",
    b"webhook-id", b"webhook-timestamp", b"webhook-signature",
)  # fmt: skip


class IntakeApp(FastAPI):
    """FastAPI, except that the signup webhook skips the generic middleware and routing layers.

    Why: the webhook is the one hot path, and FastAPI's stack (three more middlewares than
    Starlette, routing past the docs routes, its request wrapper) measured ~20 of ~60 us per request
    in-process, before the insert. The fast path calls the very same endpoint the documented route
    uses, so behaviour is identical; anything that does not match exactly (another method, a
    trailing slash, a mounted prefix) goes through the normal stack to that same endpoint.
    Mind it when adding middleware: the signup webhook does not pass through user middleware.
    """

    signup_endpoint: Callable[[Request], Awaitable[Response]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.signup_endpoint
        if (
            endpoint is not None
            and scope["type"] == "http"
            and scope["path"] == SIGNUP_PATH
            and scope["method"] == "POST"
        ):
            scope["app"] = self
            try:
                response = await endpoint(Request(scope, receive))
            except Exception:  # what ServerErrorMiddleware would do on the normal path
                log.exception("signup webhook failed")
                response = _json(500, {"error": "internal error"})
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class BodyTooLarge(Exception):
    """The request body is over the limit."""


def pick_headers(request: Request, names: tuple[bytes, ...]) -> dict[str, str]:
    """The wanted headers (first occurrence, lower-case names) in one pass over the raw list."""
    found: dict[str, str] = {}
    for name, value in request.scope["headers"]:
        if name in names and name.decode() not in found:
            found[name.decode()] = value.decode("latin-1")
    return found


async def read_body(request: Request, limit: int = MAX_BODY, declared: str | None = None) -> bytes:
    """The raw body, refusing more than ``limit`` bytes by Content-Length or by what actually arrives."""
    if declared is None:
        declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # a chunked or lying client: stop reading instead of buffering it all
            raise BodyTooLarge
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def json_body(request: Request, headers: dict[str, str] | None = None) -> bytes | Response:
    """A JSON webhook's raw body, or the answer refusing it: 415 not JSON, 413 too large, 400 cut off.

    ``headers``: the request's headers already picked (``pick_headers``), so the hot path reads them once.
    """
    if headers is None:
        content_type, declared = request.headers.get("content-type"), None
    else:
        content_type, declared = headers.get("content-type"), headers.get("content-length", "")
    if not is_json(content_type):
        return not_json()
    try:
        return await read_body(request, declared=declared)
    except BodyTooLarge:
        return too_large()
    except ClientDisconnect:
        return Response(status_code=400)


def error_detail(exc: ValidationError, prefix: str = "body") -> list[dict[str, Any]]:
    """Pydantic errors in FastAPI's shape, every bad field at once (no input echoed back)."""
    return [{"loc": [prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body).encode(), status_code=status, media_type="application/json", headers=headers)


RETRY_LATER = {"Retry-After": str(docs.RETRY_AFTER_S)}
NOT_JSON_BODY = b'{"error":"Content-Type must be application/json (charset utf-8 allowed)"}'
TOO_LARGE_BODY = b'{"error":"body larger than %d bytes"}' % MAX_BODY
KEY_REUSED_BODY = (
    b'{"error":"this idempotency key was already used with a different body; nothing was stored. '
    b'Send a new key for a new signup, or the same body to retry"}'
)


def not_json() -> Response:
    return Response(NOT_JSON_BODY, status_code=415, media_type="application/json")


def too_large() -> Response:
    return Response(TOO_LARGE_BODY, status_code=413, media_type="application/json")


def key_reused() -> Response:
    return Response(KEY_REUSED_BODY, status_code=409, media_type="application/json")


def unavailable(exc: BaseException, what: str) -> Response:
    """503 with Retry-After; the log names the cause, never the request's token, SQL or parameters."""
    log.warning("%s: the database is unavailable (%s)", what, failure_reason(exc))
    return Response(
        b"Temporarily unavailable; nothing changed. Please try again in a minute.\n",
        status_code=503,
        media_type="text/plain",
        headers={"Retry-After": str(docs.RETRY_AFTER_S)},
    )


def failure_reason(exc: BaseException) -> str:
    """The driver's one-line message (SQLAlchemy's own text would add the statement), else the type."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def not_found() -> Response:
    """The one answer for every bad, forged or unknown token: nothing to tell them apart."""
    return Response(b"Not found\n", status_code=404, media_type="text/plain")


CONFIRM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem">
<h1>Confirm unsubscribe</h1>
<p>Stop receiving the {campaign} emails?</p>
<form method="post"><input type="hidden" name="confirm" value="yes">
<button type="submit">Unsubscribe</button></form>
</body></html>
"""

DONE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex"><title>Unsubscribed</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem">
<p>You are unsubscribed. You will not receive any more of these emails.</p></body></html>
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the intake app; settings default to the environment (``load_settings()``)."""
    settings = settings or load_settings()
    clock = settings.clock
    campaign_name = settings.journeys().home.name
    signup_verifiers = (
        webhook_verifiers(settings.webhook_secret, "XMAS_WEBHOOK_SECRET") if settings.webhook_secret else []
    )
    resend_verifiers = (
        webhook_verifiers(settings.resend_webhook_secret, "RESEND_WEBHOOK_SECRET")
        if settings.resend_webhook_secret
        else []
    )
    trusted_proxies = settings.trusted_proxies
    redact_access_logs()

    def engine() -> sa.Engine:
        # engine_for is a dict lookup once the schema is current; a database that was down is retried.
        return engine_for(settings.database_url)

    writer = GroupCommitWriter(engine)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await run_in_threadpool(engine)
        except Exception:  # start anyway: /healthz reports it and every signup gets a 503 until it is back
            log.exception("the database is unreachable at startup")
        writer.start()
        try:
            yield
        finally:
            await run_in_threadpool(writer.stop)

    app = IntakeApp(
        title="xmas_pipeline intake",
        summary="Signup webhook, one-click unsubscribe, mail-provider webhooks.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.writer = writer

    @app.exception_handler(405)
    async def method_not_allowed(request: Request, _exc: Exception) -> Response:
        # Starlette's Allow names only the first route matching the path; /u/{token} has two (GET, POST).
        allowed = sorted(
            {m for r in app.router.routes if isinstance(r, Route) and r.path_regex.match(request.url.path)
             for m in (r.methods or ())}
        )  # fmt: skip
        return _json(405, {"detail": "Method Not Allowed"}, {"Allow": ", ".join(allowed)})

    # --- the website's signup webhook ---------------------------------------------------------

    async def signed_json(request: Request) -> Response | tuple[dict[str, str], bytes, str | None, list[dict]]:
        """What the signup and event webhooks share: JSON only, size limit, signature, the caller's key.

        Returns an error response, or (headers, raw body, caller key, header errors so far).
        """
        headers = pick_headers(request, SIGNUP_HEADERS)
        body = await json_body(request, headers)
        if isinstance(body, Response):
            return body
        if signup_verifiers:
            failure = verify_signature(signup_verifiers, body, headers)
            if failure is not None:
                return _json(401, {"error": f"invalid webhook signature: {failure}"})
        errors: list[dict[str, Any]] = []
        # The caller's own idempotency key: the signed webhook-id when signatures are on (a replay is a
        # duplicate whatever other headers say), else the optional Idempotency-Key header.
        key_header = "webhook-id" if signup_verifiers else "idempotency-key"
        key = headers.get(key_header)
        if key is not None and not CALLER_KEY.fullmatch(key):
            errors.append(
                {
                    "loc": ["header", key_header],
                    "msg": f"must be 1 to {MAX_CALLER_KEY} visible ASCII characters, without spaces",
                    "type": "value_error",
                }
            )
        return headers, body, key, errors

    async def signup(request: Request) -> Response:
        """Validate a signup and answer 202 once it is committed to the inbound queue."""
        checked = await signed_json(request)
        if isinstance(checked, Response):
            return checked
        headers, body, key, errors = checked
        now = clock.now()
        try:
            payload = SignupPayload.model_validate_json(body, context={"now": now})
        except ValidationError as exc:
            errors.extend(error_detail(exc))
        if errors:
            return _json(422, {"detail": errors})

        email = payload.email.lower()
        received = json.loads(body)  # the object as received, unknown fields included
        stored: dict[str, Any] | str = received
        if received.get("email") == email:
            # Already what we would store: keep the validated JSON text instead of serializing it again
            # (enqueue_many stores a str payload as it is; json.loads of either gives the same object).
            try:
                stored = body.decode()
            except UnicodeDecodeError:  # only json.loads's lenient decoding took it: store it re-serialized
                pass
        else:
            received["email"] = email
        event = NewEvent(
            idempotency_key=(
                f"{email}|{campaign_name}"
                if key is None
                else caller_key("webhook" if signup_verifiers else "idem", email, key)
            ),
            kind="signup",
            email=email,
            payload=stored,  # type: ignore[arg-type]  # a str is the payload's JSON text
            received_at=now,
            client_ip=client_ip(
                request.client.host if request.client else None, headers.get("x-forwarded-for"), trusted_proxies
            ),
            user_agent=headers.get("user-agent"),
        )
        try:
            enqueued = await writer.submit(event)
            if enqueued.duplicate and key is not None:
                # The caller's key promises "same request": a different body under it is a mistake to
                # report, never a signup to drop silently.
                if not await run_in_threadpool(same_payload, enqueued.event_id, received):
                    return key_reused()
        except Exception as exc:  # noqa: BLE001 - the sender retries on 5xx; nothing was committed
            log.warning("signup not stored: %s", failure_reason(exc))
            return _json(503, {"error": "the signup could not be stored; retry later"}, RETRY_LATER)
        return Response(
            b'{"event_id":%d,"duplicate":%s}' % (enqueued.event_id, b"true" if enqueued.duplicate else b"false"),
            status_code=202,
            media_type="application/json",
        )

    def same_payload(event_id: int, received: dict[str, Any]) -> bool:
        stored = payload_of(engine(), event_id)
        return stored is not None and json.loads(stored) == received

    # The handler reads the raw bytes itself: the signature covers exactly those bytes and must be
    # checked before any parsing (401 before 422). The body schema is declared through openapi_extra
    # so /docs still shows SignupPayload.
    app.signup_endpoint = signup
    app.add_api_route(
        SIGNUP_PATH,
        signup,
        methods=["POST"],
        status_code=202,
        summary="Receive a finished assessment (Standard Webhooks signed when XMAS_WEBHOOK_SECRET is set)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SignupPayload.model_json_schema()}},
            },
            "parameters": docs.SIGNUP_PARAMETERS,
        },
        responses=docs.SIGNUP_RESPONSES,
    )

    # --- health ---------------------------------------------------------------------------------

    @app.get("/healthz", summary="Whether the intake can take signups, and the inbound queue depth",
             responses=docs.HEALTH_RESPONSES)  # fmt: skip
    def healthz() -> JSONResponse:
        """``ok``, or ``degraded`` naming the dependency that failed (never a host, port or credential)."""
        try:
            queue, database = depth(engine()), "ok"
        except Exception as exc:  # noqa: BLE001 - report, do not crash the probe
            log.warning("health check: the database is unavailable (%s)", failure_reason(exc))
            queue, database = {}, "unavailable"
        up = database == "ok" and writer.alive
        return JSONResponse(
            {
                "status": "ok" if up else "degraded",
                "database": database,
                "writer": "ok" if writer.alive else "stopped",
                "queue": queue,
            },
            status_code=200 if up else 503,
        )

    # --- RFC 8058 unsubscribe -------------------------------------------------------------------

    def email_for_token(token: str) -> str | None:
        key = verify_unsubscribe_token(settings.unsubscribe_secret, token)
        return None if key is None else email_for_sequence(engine(), key)

    # The token is read from path_params (not a typed parameter), so FastAPI documents no 422 that
    # cannot happen; the parameter is declared for the schema by hand.
    async def unsubscribe_page(request: Request) -> Response:
        """A page with a button; GET never unsubscribes (link scanners follow GETs)."""
        try:
            email = await run_in_threadpool(email_for_token, request.path_params["token"])
        except Exception as exc:  # noqa: BLE001 - a database outage is a 503, never a 500
            return unavailable(exc, "unsubscribe page")
        if email is None:
            return not_found()
        return HTMLResponse(
            CONFIRM_PAGE.format(campaign=html.escape(campaign_name)), headers={"Cache-Control": "no-store"}
        )

    async def unsubscribe(request: Request) -> Response:
        """Suppress the address behind the token; 200 with a short body, never a redirect.

        Mail clients retry a one-click POST that failed, so a database outage answers 503 with
        Retry-After (and nothing changed) rather than an error that would lose the unsubscribe.
        """
        token = request.path_params["token"]
        try:
            email = await run_in_threadpool(email_for_token, token)
        except Exception as exc:  # noqa: BLE001
            return unavailable(exc, "unsubscribe")
        if email is None:
            return not_found()
        source = "unsubscribe page"
        declared = request.headers.get("content-length")
        if not (declared and declared.isdigit() and int(declared) > MAX_BODY):
            # Any POST to a valid token unsubscribes; the body only tells a mail client from the page.
            try:
                form = await request.form(max_files=0, max_fields=20)
                if form.get("List-Unsubscribe") == "One-Click":
                    source = "one-click"
            except Exception:  # noqa: BLE001 - a malformed form still carries a valid token
                pass
        try:
            await run_in_threadpool(suppress, engine(), email, "unsubscribed", source, clock.now())
        except Exception as exc:  # noqa: BLE001
            return unavailable(exc, "unsubscribe")
        return HTMLResponse(DONE_PAGE)

    app.add_api_route(
        "/u/{token}", unsubscribe_page, methods=["GET"], summary="Unsubscribe confirmation page",
        responses=docs.UNSUBSCRIBE_PAGE_RESPONSES, openapi_extra={"parameters": [docs.TOKEN_PARAMETER]},
    )  # fmt: skip
    app.add_api_route(
        "/u/{token}", unsubscribe, methods=["POST"], summary="Unsubscribe (RFC 8058 one-click or the page)",
        responses=docs.UNSUBSCRIBE_RESPONSES,
        openapi_extra={"parameters": [docs.TOKEN_PARAMETER], "requestBody": docs.UNSUBSCRIBE_BODY},
    )  # fmt: skip

    # --- Cal.com bookings and other journey events -----------------------------------------------

    async def enqueue_or_503(events: list[NewEvent], what: str):
        try:
            return [await writer.submit(e) for e in events], None
        except Exception as exc:  # noqa: BLE001 - the sender retries on 5xx; nothing was committed
            log.warning("%s not stored: %s", what, failure_reason(exc))
            return None, _json(503, {"error": f"the {what} could not be stored; retry later"}, RETRY_LATER)

    @app.post("/webhook/cal", status_code=202, responses=docs.CAL_RESPONSES,
              summary="Cal.com bookings (x-cal-signature-256 with XMAS_CAL_SECRET): reminders, no-shows, exits",
              openapi_extra={"parameters": docs.CAL_PARAMETERS, "requestBody": docs.CAL_BODY})  # fmt: skip
    async def cal_webhook(request: Request) -> Response:
        """Store each booking event Cal.com sends, once; the signup sensor acts on it (2xx only after commit)."""
        if not settings.cal_secret:
            return _json(503, {"error": "XMAS_CAL_SECRET not configured: set it to the Cal.com webhook's secret"},
                         RETRY_LATER)
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        if not verify_cal_signature(settings.cal_secret, body, request.headers.get(CAL_SIGNATURE)):
            return _json(401, {"error": f"missing or invalid {CAL_SIGNATURE}"})
        try:
            meaning = interpret(parse_cal_webhook(body))
        except CalPayloadError as exc:
            return _json(400, {"error": str(exc)[:500]})
        if isinstance(meaning, Ignored):
            return _json(200, {"ignored": meaning.reason[:200]})
        now = clock.now()
        events = [
            NewEvent(
                idempotency_key=e.dedupe_key[:400], kind=e.kind, email=e.email,
                payload={"kind": e.kind, "email": e.email, "booking_uid": e.booking_uid,
                         "event_at": e.event_at.isoformat() if e.event_at else None,
                         "attendee_timezone": e.attendee_timezone, "name": e.name,
                         "previous_booking_uid": e.previous_booking_uid,
                         "occurred_at": e.occurred_at.isoformat() if e.occurred_at else None},
                received_at=now, client_ip=request.client.host if request.client else None,
                user_agent=request.headers.get("user-agent"),
            )
            for e in meaning
        ]
        stored, failed = await enqueue_or_503(events, "booking")
        if failed is not None:
            return failed
        return _json(202, {"events": [{"event_id": s.event_id, "kind": e.kind, "duplicate": s.duplicate}
                                      for s, e in zip(stored, events)]})

    journey_event = TypeAdapter(JourneyEventBody)

    @app.post("/webhook/event", status_code=202, responses=docs.EVENT_RESPONSES,
              summary="A call outcome or a payment (Standard Webhooks signed when XMAS_WEBHOOK_SECRET is set)",
              openapi_extra={"parameters": docs.SIGNUP_PARAMETERS, "requestBody": {
                  "required": True, "content": {"application/json": {"schema": docs.event_body_schema()}}}})  # fmt: skip
    async def event_webhook(request: Request) -> Response:
        """`call_outcome` maybe starts the post-call follow-up; a `payment` with status paid starts onboarding."""
        checked = await signed_json(request)
        if isinstance(checked, Response):
            return checked
        headers, body, key, errors = checked
        try:
            parsed = journey_event.validate_json(body)
        except ValidationError as exc:
            errors.extend(error_detail(exc))
        if errors:
            return _json(422, {"detail": errors})
        email = str(parsed.email).lower()
        received = {**json.loads(body), "email": email}
        natural = (f"{parsed.type}|{email}|{parsed.outcome}" if parsed.type == "call_outcome"
                   else f"{parsed.type}|{email}|{parsed.paid_at.isoformat()}|{parsed.status}|{parsed.amount}")
        event = NewEvent(
            idempotency_key=natural if key is None else caller_key("webhook" if signup_verifiers else "idem", email, key),
            kind="journey_event", email=email, payload=received, received_at=clock.now(),
            client_ip=client_ip(request.client.host if request.client else None, headers.get("x-forwarded-for"),
                                trusted_proxies),
            user_agent=headers.get("user-agent"),
        )
        stored, failed = await enqueue_or_503([event], "event")
        if failed is not None:
            return failed
        (enqueued,) = stored
        if enqueued.duplicate and key is not None:
            try:
                same = await run_in_threadpool(same_payload, enqueued.event_id, received)
            except Exception as exc:  # noqa: BLE001
                return unavailable(exc, "event")
            if not same:
                return key_reused()
        return _json(202, {"event_id": enqueued.event_id, "duplicate": enqueued.duplicate})

    # --- Resend (Svix-signed) delivery events ---------------------------------------------------

    @app.post("/webhook/resend", summary="Resend delivery events (Svix signed with RESEND_WEBHOOK_SECRET)",
              responses=docs.RESEND_RESPONSES, openapi_extra={"requestBody": docs.RESEND_BODY})  # fmt: skip
    async def resend_webhook(request: Request) -> Response:
        """Record delivered/opened/clicked/bounced/complained per message (once per Svix id); hard bounces and complaints suppress."""
        if not resend_verifiers:
            return _json(503, {"error": "RESEND_WEBHOOK_SECRET not configured"}, RETRY_LATER)
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        h = request.headers
        svix_headers = {
            "webhook-id": h.get("svix-id", ""),
            "webhook-timestamp": h.get("svix-timestamp", ""),
            "webhook-signature": h.get("svix-signature", ""),
        }
        failure = verify_signature(resend_verifiers, body, svix_headers)
        if failure is not None:
            return _json(401, {"error": f"invalid webhook signature: {failure}"})
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(data, dict) or not isinstance(event.get("type"), str):
            return _json(422, {"error": "expected a JSON object with type and data"})
        kind = event["type"]

        if kind == "email.delivered":
            name, reason = "delivered", None
        elif kind == "email.opened":
            name, reason = "opened", None
        elif kind == "email.clicked":
            name, reason = "clicked", None
        elif kind == "email.bounced":
            bounce = data.get("bounce") if isinstance(data.get("bounce"), dict) else {}
            bounce_type = str(bounce.get("type") or "permanent").lower()
            hard = bounce_type in HARD_BOUNCE_TYPES
            name, reason = ("bounced", "bounced") if hard else ("soft_bounced", None)
        elif kind == "email.complained":
            name, reason = "complained", "complained"
        else:
            return _json(200, {"ignored": kind[:100]})

        recipients = data.get("to") or []
        recipients = [recipients] if isinstance(recipients, str) else [r for r in recipients if isinstance(r, str)]
        # Svix keeps the id across its retries: it dedupes the event (the signature check required it).
        delivery_key = svix_headers["webhook-id"] or f"sha256:{hashlib.sha256(body).hexdigest()}"
        provider_id = str(data["email_id"]) if data.get("email_id") else None

        def apply() -> dict[str, Any]:
            now = clock.now()
            db = engine()
            try:
                occurred = parse_instant(event["created_at"]) if isinstance(event.get("created_at"), str) else now
            except ValueError:
                occurred = now
            seen = engagement.record(db, svix_id=delivery_key, provider_id=provider_id, kind=name,
                                     occurred_at=occurred, received_at=now)
            known = seen.email
            if provider_id and name not in ("opened", "clicked") and not seen.duplicate:
                # The ledger's event column keeps the latest delivery outcome; a replay must not rewrite it.
                record_provider_event(db, provider_id, name, now)
            suppressed = []
            if reason is not None:
                # The ledger's recipient when we sent it; else whoever Resend says it went to.
                for address in [known] if known else recipients:
                    suppress(db, address, reason, "resend", now)
                    suppressed.append(address.strip().lower())
            return {"event": name, "recorded": known is not None, "suppressed": suppressed,
                    "duplicate": seen.duplicate}

        try:
            return _json(200, await run_in_threadpool(apply))
        except Exception as exc:  # noqa: BLE001 - Resend retries a 5xx; a 500 would say we broke
            log.warning("resend event not recorded: the database is unavailable (%s)", failure_reason(exc))
            return _json(503, {"error": "the event could not be recorded; retry later"}, RETRY_LATER)

    return app


# `uvicorn --factory xmas_pipeline.web.app:app` works as well as `...:create_app`.
app = create_app
