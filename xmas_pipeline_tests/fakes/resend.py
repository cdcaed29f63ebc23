"""A local Resend API over real HTTP: auth, idempotency keys, batches, rate limits, quotas, failures.

Behaviour follows /work/shared/reference/external-apis.md section 3. Usage::

    with ResendEmulator(rate_limit=2) as emu:
        sender = ResendSender(emu.api_key, api_url=emu.api_url)
        ...
        assert len(emu.sent) == 3
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BATCH = 100
MAX_TO = 50
_TAG_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_ADDRESS_RE = re.compile(r"^(?:[^<>@\s]+@[^<>@\s]+\.[^<>@\s]+|[^<>]*<[^<>@\s]+@[^<>@\s]+\.[^<>@\s]+>)$")


class _Reply(Exception):
    """Raised inside request handling to answer with an error body."""

    def __init__(self, status: int, name: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.name, self.message = status, name, message
        self.headers = headers or {}


@dataclass
class _Window:
    start: float = 0.0
    count: int = 0


@dataclass
class _Injected:
    status: int
    name: str
    after_accept: bool  # True: the email is accepted and recorded, but the client sees the error


class ResendEmulator:
    """Resend's ``POST /emails`` and ``POST /emails/batch`` on 127.0.0.1, on a thread."""

    def __init__(
        self,
        api_key: str = "re_test_key",
        rate_limit: int | None = 10,
        window_s: float = 1.0,
        daily_quota: int | None = None,
        monthly_quota: int | None = None,
        delay_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.rate_limit = rate_limit  # requests per window per API key; None = unlimited
        self.window_s = window_s
        self.daily_quota = daily_quota  # emails accepted before 429 daily_quota_exceeded; None = unlimited
        self.monthly_quota = monthly_quota
        self.delay_s = delay_s  # processing time per request (to exercise in-flight idempotency)
        self.hold_after_accept_s = 0.0  # accept and record, then keep the client waiting (crash-window tests)
        self.sent: list[dict[str, Any]] = []
        self.requests = 0
        self.rate_limited = 0
        self.log: list[tuple[float, str, int]] = []  # (monotonic time, path, status) per request
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._idempotency: dict[str, dict[str, Any]] = {}  # key -> {"hash", "done", "status", "body"}
        self._injected: list[_Injected] = []
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ResendEmulator":
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="resend-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ResendEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- knobs ----------------------------------------------------------------------------------------

    def fail_next(self, count: int = 1, status: int = 500, name: str = "internal_server_error",
                  after_accept: bool = False) -> None:
        """Answer the next ``count`` authorised requests with ``status``.

        ``after_accept=True`` simulates a lost response: the emails are sent and the idempotency key is
        stored, but the client gets the error (its retry must get the first response back).
        """
        with self._lock:
            self._injected.extend(_Injected(status, name, after_accept) for _ in range(count))

    # -- request handling -----------------------------------------------------------------------------

    def _rate_headers(self, token: str) -> tuple[dict[str, str], bool]:
        """Count this request in the caller's fixed window; return headers and whether it is allowed."""
        if self.rate_limit is None:
            return {}, True
        now = time.monotonic()
        with self._lock:
            window = self._windows.setdefault(token, _Window(start=now))
            if now - window.start >= self.window_s:
                window.start, window.count = now, 0
            allowed = window.count < self.rate_limit
            if allowed:
                window.count += 1
            else:
                self.rate_limited += 1
            reset = max(1, math.ceil(window.start + self.window_s - now))
            headers = {
                "ratelimit-limit": str(self.rate_limit),
                "ratelimit-remaining": str(self.rate_limit - window.count),
                "ratelimit-reset": str(reset),
            }
        if not allowed:
            headers["retry-after"] = str(reset)
        return headers, allowed

    def _check_auth(self, authorization: str | None) -> None:
        if not authorization or not authorization.startswith("Bearer ") or not authorization[7:].strip():
            raise _Reply(401, "missing_api_key", "Missing API key in the authorization header.")
        if authorization[7:].strip() != self.api_key:
            raise _Reply(403, "invalid_api_key", "API key is invalid.")

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Process one POST; returns (status, JSON body, extra headers)."""
        with self._lock:
            self.requests += 1
        token = (headers.get("authorization") or "")[7:].strip()
        rate_headers, allowed = self._rate_headers(token)
        try:
            if path not in ("/emails", "/emails/batch"):
                raise _Reply(404, "not_found", "The requested endpoint does not exist.")
            self._check_auth(headers.get("authorization"))
            if not allowed:
                raise _Reply(429, "rate_limit_exceeded",
                             "Too many requests. You can only make a limited number of requests per second.")
            injected = self._take_injected()
            if injected is not None and not injected.after_accept:
                raise _Reply(injected.status, injected.name, "Injected failure.")
            status, body = self._idempotent(path, headers, raw)
            if self.hold_after_accept_s:
                time.sleep(self.hold_after_accept_s)
            if injected is not None:
                raise _Reply(injected.status, injected.name, "Injected failure after the email was accepted.")
            return status, body, rate_headers
        except _Reply as reply:
            body = {"statusCode": reply.status, "name": reply.name, "message": reply.message}
            return reply.status, body, {**rate_headers, **reply.headers}

    def _take_injected(self) -> _Injected | None:
        with self._lock:
            return self._injected.pop(0) if self._injected else None

    def _idempotent(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        try:
            payload = json.loads(raw or b"null")
        except ValueError:
            raise _Reply(400, "validation_error", "The request body is not valid JSON.") from None
        permissive = headers.get("x-batch-validation", "strict").lower() == "permissive"
        key = headers.get("idempotency-key")
        if key is None:
            return self._process(path, payload, None, permissive)
        if not 1 <= len(key) <= 256:
            raise _Reply(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
        canonical = json.dumps([path, permissive, payload], sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        with self._lock:
            entry = self._idempotency.get(key)
            if entry is not None:
                if entry["hash"] != digest:
                    raise _Reply(409, "invalid_idempotent_request",
                                 "Same idempotency key used with a different request payload.")
                if not entry["done"]:
                    raise _Reply(409, "concurrent_idempotent_requests",
                                 "Same idempotency key used while original request is still in progress.")
                return entry["status"], entry["body"]
            self._idempotency[key] = {"hash": digest, "done": False}
        try:
            status, body = self._process(path, payload, key, permissive)
        except BaseException:
            with self._lock:  # failed requests are not remembered: a retry is processed afresh
                del self._idempotency[key]
            raise
        with self._lock:
            self._idempotency[key].update(done=True, status=status, body=body)
        return status, body

    def _process(self, path: str, payload: Any, key: str | None, permissive: bool) -> tuple[int, dict[str, Any]]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if path == "/emails":
            problem = _validate(payload)
            if problem:
                raise _Reply(422, problem[0], problem[1])
            self._charge_quota(1)
            return 200, {"id": self._record(payload, key, batch=False)}
        if not isinstance(payload, list) or not payload:
            raise _Reply(422, "validation_error", "The request body must be a non-empty array of emails.")
        if len(payload) > MAX_BATCH:
            raise _Reply(422, "validation_error", f"Too many emails in the batch: at most {MAX_BATCH} allowed.")
        problems = {i: p for i, item in enumerate(payload) if (p := _validate(item, batch=True))}
        if problems and not permissive:
            index, (name, message) = next(iter(problems.items()))
            raise _Reply(422, name, f"emails[{index}]: {message}")
        self._charge_quota(len(payload) - len(problems))
        data = [{"id": self._record(item, key, batch=True)} for i, item in enumerate(payload) if i not in problems]
        body: dict[str, Any] = {"data": data}
        if permissive:
            body["errors"] = [{"index": i, "message": p[1]} for i, p in problems.items()]
        return 200, body

    def _charge_quota(self, count: int) -> None:
        with self._lock:
            if self.daily_quota is not None and len(self.sent) + count > self.daily_quota:
                raise _Reply(429, "daily_quota_exceeded", "You have reached your daily email sending quota.")
            if self.monthly_quota is not None and len(self.sent) + count > self.monthly_quota:
                raise _Reply(429, "monthly_quota_exceeded", "You have reached your monthly email sending quota.")

    def _record(self, item: dict[str, Any], key: str | None, batch: bool) -> str:
        email_id = str(uuid.uuid4())
        to = item["to"] if isinstance(item["to"], list) else [item["to"]]
        record = {
            "id": email_id,
            "from": item["from"],
            "to": to,
            "subject": item["subject"],
            "html": item.get("html"),
            "text": item.get("text"),
            "reply_to": item.get("reply_to"),
            "headers": dict(item.get("headers") or {}),
            "tags": list(item.get("tags") or []),
            "idempotency_key": key,
            "batch": batch,
        }
        with self._lock:
            self.sent.append(record)
        return email_id


def _validate(item: Any, batch: bool = False) -> tuple[str, str] | None:
    """Return (error name, message) for an invalid email object, else None."""
    if not isinstance(item, dict):
        return "validation_error", "Each email must be an object."
    for field in ("from", "to", "subject"):
        if not item.get(field):
            return "missing_required_field", f"The `{field}` field is missing."
    if not _ADDRESS_RE.match(str(item["from"])):
        return "validation_error", "Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."
    to = item["to"] if isinstance(item["to"], list) else [item["to"]]
    if not 1 <= len(to) <= MAX_TO:
        return "validation_error", f"The `to` field must have between 1 and {MAX_TO} addresses."
    for address in to:
        if not isinstance(address, str) or not _ADDRESS_RE.match(address):
            return "validation_error", f"Invalid `to` field: {address!r} is not a valid email address."
    if not item.get("html") and not item.get("text"):
        return "validation_error", "Either `html` or `text` must be provided."
    headers = item.get("headers")
    if headers is not None and (
        not isinstance(headers, dict) or not all(isinstance(v, str) and "\n" not in v and "\r" not in v
                                                 for v in headers.values())
    ):
        return "validation_error", "The `headers` field must be an object of single-line strings."
    for tag in item.get("tags") or []:
        if not (isinstance(tag, dict) and _TAG_RE.match(str(tag.get("name", "")))
                and _TAG_RE.match(str(tag.get("value", "")))):
            return "validation_error", "Tags should only contain ASCII letters, numbers, underscores, or dashes."
    if batch and ("attachments" in item or "scheduled_at" in item):
        return "validation_error", "`attachments` and `scheduled_at` are not supported in batch sending."
    return None


def _make_handler(emu: ResendEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind a load balancer
        disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall

        def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, extra = emu.handle(self.path, headers, raw)
            with emu._lock:
                emu.log.append((time.monotonic(), self.path, status))
            self._reply(status, body, extra)

        def do_GET(self) -> None:  # noqa: N802
            body = {"statusCode": 405, "name": "method_not_allowed",
                    "message": "Method is not allowed for the requested path."}
            self._reply(405, body, {})

        def _reply(self, status: int, body: dict[str, Any], extra: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output quiet

    return Handler
