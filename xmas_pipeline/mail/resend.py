"""A sender for Resend's HTTP API: idempotency keys, batches of 100, and pacing on the rate-limit headers."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Callable, Sequence

import requests

from xmas_pipeline.mail.base import ConfigurationError, OutgoingMessage, QuotaExceeded, SendError, SendResult
from xmas_pipeline.mail.message import safe_header

_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_SERVER_RETRIES = 3  # attempts after the first on 5xx / network errors
_BACKOFF_S = (1.0, 2.0, 4.0)
_CONCURRENT_WAIT_S = 1.0  # 409 concurrent_idempotent_requests: the first request is still being processed


def _tag_value(value: str) -> str:
    """Resend tags allow ASCII letters, digits, ``_`` and ``-`` only (max 256)."""
    return _TAG_UNSAFE.sub("_", value)[:256] or "_"


def _seconds(value: str | None) -> float | None:
    """Parse a delta-seconds header value; None when absent or not a number (e.g. an HTTP date)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class _Answer:
    """One HTTP answer reduced to what the retry logic needs."""

    def __init__(self, response: requests.Response) -> None:
        self.status = response.status_code
        self.headers = response.headers
        try:
            self.body: Any = response.json()
        except ValueError:
            self.body = None
        body = self.body if isinstance(self.body, dict) else {}
        self.name = str(body.get("name") or "")
        self.message = str(body.get("message") or response.text[:300] or response.reason)

    def describe(self) -> str:
        return f"HTTP {self.status} {self.name or '-'}: {self.message}"


class ResendSender:
    """Send through ``POST /emails`` (one message) or ``POST /emails/batch`` (2..100 messages)."""

    max_batch = 100
    name = "resend"

    def __init__(
        self,
        api_key: str,
        api_url: str = "https://api.resend.com",
        timeout: float = 30,
        max_wait_s: float = 60,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.max_wait_s = max_wait_s  # total time one send() may spend waiting on 429 / 409-in-flight
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers.update({
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": "xmas_pipeline",
        })
        self._not_before = 0.0  # monotonic time before which the next call must not start

    @property
    def pacing_delay_s(self) -> float:
        """Seconds the next call would wait because the last response said the rate budget is used up."""
        return max(0.0, self._not_before - time.monotonic())

    # -- payload --------------------------------------------------------------------------------------

    @staticmethod
    def _email(msg: OutgoingMessage) -> dict[str, Any]:
        email: dict[str, Any] = {
            "from": safe_header(msg.from_),
            "to": [safe_header(msg.to)],
            "subject": safe_header(msg.subject),
            "html": msg.html,
            "text": msg.text,
        }
        if msg.reply_to:
            email["reply_to"] = safe_header(msg.reply_to)
        # List-Unsubscribe and List-Unsubscribe-Post travel here (RFC 8058); Resend sets its own Message-ID.
        headers = {safe_header(k): safe_header(v) for k, v in msg.headers.items()}
        if headers:
            email["headers"] = headers
        if msg.tags:
            email["tags"] = [{"name": _tag_value(k), "value": _tag_value(v)} for k, v in msg.tags.items()]
        return email

    # -- sending --------------------------------------------------------------------------------------

    def send(self, batch_key: str, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if len(messages) > self.max_batch:
            raise ValueError(f"resend takes at most {self.max_batch} messages per call, got {len(messages)}")
        if not messages:
            return []
        if len(messages) == 1:
            key, path, payload = messages[0].key, "/emails", self._email(messages[0])
        else:
            key, path, payload = batch_key, "/emails/batch", [self._email(m) for m in messages]
        if not 1 <= len(key) <= 256:
            raise ValueError(f"Resend idempotency keys must be 1-256 characters, got {len(key)}")
        # Serialize once: every retry must carry byte-identical content, or Resend answers 409.
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Idempotency-Key": key}
        if path == "/emails/batch":
            # Permissive: one invalid address fails alone instead of taking 99 good emails down with it.
            headers["x-batch-validation"] = "permissive"
        answer = self._call(path, body, headers)
        return self._results(messages, path, answer)

    def _call(self, path: str, body: bytes, headers: dict[str, str]) -> _Answer:
        """POST with pacing and retries; return the final answer (2xx or a non-retryable error)."""
        waited = 0.0
        failures = 0
        while True:
            self._pace()
            try:
                response = self.session.post(self.api_url + path, data=body, headers=headers, timeout=self.timeout)
            except requests.RequestException as exc:
                # Timeouts included: the request may have been processed; the same key makes a retry safe.
                failures += 1
                if failures > _SERVER_RETRIES:
                    raise SendError(f"Resend at {self.api_url} unreachable after {failures} attempts: {exc!r}. "
                                    f"Check the network and RESEND api_url") from exc
                self.sleep(_BACKOFF_S[failures - 1])
                continue
            answer = _Answer(response)
            self._remember_budget(answer)

            if answer.status == 429 and answer.name in ("daily_quota_exceeded", "monthly_quota_exceeded"):
                raise QuotaExceeded(f"Resend {answer.name.replace('_', ' ')}: {answer.message} "
                                    f"Stop sending until the quota resets or the plan is raised.")
            if answer.status == 429 or (answer.status == 409 and answer.name == "concurrent_idempotent_requests"):
                if answer.status == 429:
                    wait = (_seconds(answer.headers.get("retry-after"))
                            or _seconds(answer.headers.get("ratelimit-reset")) or 1.0)
                else:
                    wait = _CONCURRENT_WAIT_S
                if waited + wait > self.max_wait_s:
                    raise SendError(f"Resend kept answering {answer.describe()} for more than "
                                    f"{self.max_wait_s:g} s of waiting; retry later with the same key")
                waited += wait
                self.sleep(wait)
                continue
            if answer.status >= 500:
                failures += 1
                if failures > _SERVER_RETRIES:
                    raise SendError(f"Resend failed {failures} times: {answer.describe()}")
                self.sleep(_BACKOFF_S[failures - 1])
                continue
            if answer.status in (401, 403) and answer.name in ("missing_api_key", "invalid_api_key",
                                                                "restricted_api_key"):
                raise ConfigurationError(f"Resend rejected the API key ({answer.describe()}): check RESEND_API_KEY")
            if answer.status == 403:
                # e.g. "The example.com domain is not verified": true of every message from this sender.
                raise ConfigurationError(f"Resend refused to send for this account ({answer.describe()}): verify the "
                                         f"sender's domain at resend.com/domains or fix the campaign's sender.email")
            if answer.status in (404, 405):
                raise ConfigurationError(f"Resend answered {answer.describe()} for {self.api_url}{path}: "
                                         f"check XMAS_RESEND_API_URL")
            return answer

    def _pace(self) -> None:
        # Proactive: when the last response said the budget is spent, wait for the window to reset
        # instead of spending a request on a 429.
        delay = self.pacing_delay_s
        if delay > 0:
            self.sleep(delay)

    def _remember_budget(self, answer: _Answer) -> None:
        remaining = _seconds(answer.headers.get("ratelimit-remaining"))
        reset = _seconds(answer.headers.get("ratelimit-reset"))
        if remaining is not None and remaining <= 0 and reset is not None and answer.status != 429:
            self._not_before = time.monotonic() + reset

    def _results(self, messages: Sequence[OutgoingMessage], path: str, answer: _Answer) -> list[SendResult]:
        if answer.status == 409 and answer.name == "invalid_idempotent_request":
            # Resend already holds another message under this key: it may or may not have gone out, and
            # neither resending nor skipping is safe. A person decides (`xmas retry --held`).
            reason = (f"Resend already has a different message under key {messages[0].key if len(messages) == 1 else path}"
                      f" ({answer.describe()}): check Resend's log for it, then `xmas retry --held` to send it anew")
            return [SendResult(key=m.key, error=reason, uncertain=True) for m in messages]
        if answer.status >= 400:
            # Validation errors (400/422): resending the same body cannot succeed, so fail loudly.
            reason = f"Resend refused the {'batch' if len(messages) > 1 else 'email'}: {answer.describe()}"
            return [SendResult(key=m.key, error=reason, permanent=True) for m in messages]
        body = answer.body if isinstance(answer.body, dict) else None
        if body is None:
            raise SendError(f"Resend answered HTTP {answer.status} with an unreadable body: {answer.message}")
        if path == "/emails":
            if not body.get("id"):
                raise SendError(f"Resend answered HTTP {answer.status} without an email id: {body}")
            return [SendResult(key=messages[0].key, provider_id=str(body["id"]))]
        # Permissive batch: "data" lists the created emails in request order, skipping the indexes in "errors".
        errors = {int(e["index"]): str(e.get("message", "invalid email")) for e in body.get("errors") or []}
        data = list(body.get("data") or [])
        if len(data) + len(errors) != len(messages):
            raise SendError(f"Resend batch answer does not match the request: {len(messages)} emails sent, "
                            f"{len(data)} ids and {len(errors)} errors returned")
        ids = iter(data)
        results = []
        for index, msg in enumerate(messages):
            if index in errors:
                results.append(SendResult(key=msg.key, error=f"Resend refused the email: {errors[index]}",
                                          permanent=True))
            else:
                results.append(SendResult(key=msg.key, provider_id=str(next(ids)["id"])))
        return results
