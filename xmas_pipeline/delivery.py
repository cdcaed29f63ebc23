"""Use case: send the steps that have come due, exactly once.

For each due step whose time has come: check it may still go (not suppressed, sequence active, no call
booked, campaign not over), claim its ledger row, render it, freeze the rendered message in the row,
hand it to the sender with an idempotency key derived from the row, record the outcome. A claim left
by a crashed run is resumed later with the same key and the same bytes. Afterwards the "Email N Sent"
dates go back to the CRM, one call per sequence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa

from xmas_pipeline.campaign.clock import Clock
from xmas_pipeline.campaign.models import Campaign
from xmas_pipeline.campaign.rendering import TemplateError, TemplateSource, render
from xmas_pipeline.campaign.tokens import unsubscribe_token
from xmas_pipeline.campaign.variables import build_variables
from xmas_pipeline.crm.base import CRM, SequenceUpdate
from xmas_pipeline.mail.base import OutgoingMessage, QuotaExceeded, SendError, Sender
from xmas_pipeline.mail.compose import compose, unsubscribe_url
from xmas_pipeline.store import ledger, mirror, suppressions
from xmas_pipeline.store.ledger import Claim, Due
from xmas_pipeline.store.schema import deliveries, sequences

log = logging.getLogger(__name__)

BOOKED = {"booked", "completed"}
# What a marketer sees in the contact's "Christmas Campaign Status" when a sequence stops.
CONTACT_STATUS_FOR_EXIT = {"unsubscribed": "Unsubscribed", "complained": "Unsubscribed", "bounced": "Bounced"}


@dataclass
class DeliveryContext:
    engine: sa.Engine
    crm: CRM
    sender: Sender
    campaign: Campaign
    load_templates: Callable[[], dict[str, TemplateSource]]  # called once, on first use
    clock: Clock
    public_url: str
    unsubscribe_secret: str
    run_id: str | None = None
    lease: dt.timedelta = ledger.DEFAULT_LEASE
    _templates: dict[str, TemplateSource] | None = field(default=None, repr=False)

    @property
    def templates(self) -> dict[str, TemplateSource]:
        if self._templates is None:
            self._templates = self.load_templates()
        return self._templates


@dataclass
class DeliveryReport:
    sent: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    not_yet_due: int = 0
    already_done: int = 0
    resumed: int = 0
    in_doubt: list[dict] = field(default_factory=list)  # handed to the provider, outcome unknown: resumed later
    crm_errors: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early (provider quota)

    def merge(self, other: DeliveryReport) -> None:
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, int):
                setattr(self, f.name, mine + theirs)
            elif theirs:
                setattr(self, f.name, theirs)


def _batch_key(claims: list[Claim]) -> str:
    digest = hashlib.sha256("\n".join(c.idempotency_key for c in claims).encode()).hexdigest()
    return f"xmas-batch-{digest[:32]}"


def _eligibility(
    ctx: DeliveryContext, due: list[Due]
) -> tuple[list[Due], list[tuple[Due, str]], dict[str, sa.RowMapping]]:
    """Which due steps may still go, why the others may not, and their sequences (for rendering)."""
    keys = list({d.sequence_key for d in due})
    emails = list({d.email for d in due})
    seqs = mirror.load_sequences(ctx.engine, keys)
    suppressed = suppressions.suppressed(ctx.engine, emails)
    booking = mirror.booking_statuses(ctx.engine, emails)
    ok, skips, booked_keys = [], [], []
    for d in due:
        seq = seqs.get(d.sequence_key)
        if seq is None:
            skips.append((d, "no such sequence"))
        elif d.email in suppressed:
            skips.append((d, f"suppressed: {suppressed[d.email]}"))
        elif seq["status"] != "active":
            skips.append((d, f"sequence {seq['status']}" + (f": {seq['exit_reason']}" if seq["exit_reason"] else "")))
        elif (booking.get(d.email) or "").strip().lower() in BOOKED:
            skips.append((d, "booked a call"))
            booked_keys.append(d.sequence_key)
        elif d.due_at >= ctx.campaign.end:
            skips.append((d, "expired: due after the campaign end"))
        else:
            ok.append(d)
    if booked_keys:
        mirror.set_status(ctx.engine, booked_keys, "exited", "booked a call", ctx.clock.now())
    return ok, skips, seqs


def _render(ctx: DeliveryContext, claim: Claim, seq: sa.RowMapping) -> dict:
    step = ctx.campaign.step(claim.step)
    template = ctx.templates.get(step.template)
    if template is None:
        raise TemplateError(f"template {step.template!r} for step {claim.step} does not exist")
    token = unsubscribe_token(ctx.unsubscribe_secret, claim.sequence_key)
    unsub = unsubscribe_url(ctx.public_url, token)
    profile = json.loads(seq["profile"]) if seq["profile"] else {}
    profile.setdefault("first_name", seq["first_name"])
    profile.setdefault("business_name", seq["business_name"])
    profile.setdefault("assessment_score", seq["assessment_score"])
    for color in ("red", "orange", "yellow", "green"):
        profile.setdefault(f"{color}_systems", seq[f"{color}_systems"])
    variables = build_variables(
        profile=profile, segment=seq["segment"], campaign=ctx.campaign, step=claim.step, now=ctx.clock.now(), unsubscribe_url=unsub
    )
    rendered = render(template, variables)
    message = compose(
        campaign=ctx.campaign,
        rendered=rendered,
        to=claim.email,
        key=claim.idempotency_key,
        unsub_url=unsub,
        token=token,
        tags={"campaign": ctx.campaign.slug, "step": str(claim.step), "segment": seq["segment"]},
    )
    return dataclasses.asdict(message)


def _send_batch(ctx: DeliveryContext, batch_key: str, items: list[tuple[Claim, dict]], report: DeliveryReport) -> None:
    messages = [OutgoingMessage(**m) for _, m in items]
    try:
        results = ctx.sender.send(batch_key, messages)
    except QuotaExceeded:
        raise
    except SendError as exc:
        # The provider may or may not have them: the claims stay, and a later run resumes them with the same key.
        for claim, m in items:
            report.in_doubt.append({"email": claim.email, "step": claim.step, "error": str(exc)})
        log.warning("send of batch %s failed, will resume after the lease: %s", batch_key, exc)
        return
    now = ctx.clock.now()
    sent, failed, refused = [], [], []
    for (claim, m), result in zip(items, results):
        if result.ok:
            sent.append((claim, ctx.sender.name, result.provider_id))
            report.sent.append(
                {"email": claim.email, "step": claim.step, "subject": m["subject"], "provider_id": result.provider_id}
            )
        elif result.permanent:
            # The provider will never take this message (bad address, conflicting key): stop, don't loop.
            refused.append((claim, f"refused by {ctx.sender.name}: {result.error}"))
            report.failed.append({"email": claim.email, "step": claim.step, "error": refused[-1][1]})
        else:
            failed.append((claim, result.error or "refused"))
            report.failed.append({"email": claim.email, "step": claim.step, "error": result.error})
    ledger.mark_sent(ctx.engine, sent, now)
    ledger.mark_failed(ctx.engine, failed)
    ledger.mark_refused(ctx.engine, refused)


def deliver(ctx: DeliveryContext, due: list[Due]) -> DeliveryReport:
    """Send what is due now among ``due``; later steps wait for a later run."""
    report = DeliveryReport()
    now = ctx.clock.now()
    ready = [d for d in due if d.due_at <= now]
    report.not_yet_due = len(due) - len(ready)
    ok, skips, seqs = _eligibility(ctx, ready)
    ledger.mark_skipped(ctx.engine, skips, now)
    report.skipped.extend({"email": d.email, "step": d.step, "reason": why} for d, why in skips)

    claims = ledger.claim(ctx.engine, ok, run_id=ctx.run_id, lease=ctx.lease)
    report.already_done = len(ok) - len(claims)

    # Resumed claims go out again exactly as frozen, in their original batches (same key, same bytes).
    resumed: dict[str, list[tuple[Claim, dict]]] = {}
    fresh: list[tuple[Claim, dict]] = []
    failures: list[tuple[Claim, str]] = []
    for claim in claims:
        if claim.resumed and claim.message:
            resumed.setdefault(claim.batch_key or claim.idempotency_key, []).append((claim, claim.message))
            continue
        try:
            fresh.append((claim, _render(ctx, claim, seqs[claim.sequence_key])))
        except TemplateError as exc:
            failures.append((claim, str(exc)))
            report.failed.append({"email": claim.email, "step": claim.step, "error": str(exc)})
    ledger.mark_failed(ctx.engine, failures)
    report.resumed = sum(len(v) for v in resumed.values())

    batches = list(resumed.items())
    size = max(1, ctx.sender.max_batch)
    for start in range(0, len(fresh), size):
        chunk = fresh[start : start + size]
        batches.append((_batch_key([c for c, _ in chunk]), chunk))

    for index, (batch_key, items) in enumerate(batches):
        ledger.freeze(
            ctx.engine,
            [c for c, _ in items],
            {c.id: m for c, m in items},
            {c.id: batch_key for c, _ in items},
        )
        try:
            _send_batch(ctx, batch_key, items, report)
        except QuotaExceeded as exc:
            report.stopped = str(exc)
            leftover = [c for _, later in batches[index:] for c, _ in later]
            ledger.release(ctx.engine, [c for c, _ in items])  # frozen but refused: keep for resume
            ledger.release(ctx.engine, leftover)
            break

    _complete_finished(ctx)
    report.crm_errors.extend(sync_crm(ctx))
    return report


def _complete_finished(ctx: DeliveryContext) -> None:
    """A sequence whose last step is finished is completed."""
    last = len(ctx.campaign.steps)
    with ctx.engine.begin() as conn:
        done = sa.select(deliveries.c.sequence_key).where(
            deliveries.c.step == last, deliveries.c.status.in_(ledger.FINISHED)
        )
        conn.execute(
            sequences.update()
            .where(sequences.c.status == "active", sequences.c.sequence_key.in_(done))
            .values(status="completed", updated_at=ctx.clock.now())
        )


def sync_crm(ctx: DeliveryContext) -> list[str]:
    """Tell the CRM what happened, coalesced: one update per sequence (and per stopped contact).

    "Email N Sent" dates and completion go to the sequence row; a stopped sequence (unsubscribed,
    bounced, booked) is marked completed there and its contact's campaign status says why, so
    marketers see it in Notion. Returns errors; everything not written is retried by the next run.
    """
    rows = ledger.unsynced(ctx.engine)
    exits = {e["sequence_key"]: e for e in mirror.exits_to_sync(ctx.engine)}
    if not rows and not exits:
        return []
    by_key: dict[str, list] = {key: [] for key in exits}
    for row in rows:
        by_key.setdefault(row.sequence_key, []).append(row)
    seqs = mirror.load_sequences(ctx.engine, list(by_key))
    updates = []
    for key, items in by_key.items():
        seq = seqs.get(key)
        updates.append(
            SequenceUpdate(
                sequence_key=key,
                crm_id=seq["crm_id"] if seq else None,
                steps_sent={r.step: r.sent_at for r in items},
                completed=True if seq is not None and seq["status"] in ("completed", "exited") else None,
            )
        )
    try:
        ctx.crm.update_sequences(updates)
        for exit in exits.values():
            contact = mirror.get_contact(ctx.engine, exit["email"])
            status = CONTACT_STATUS_FOR_EXIT.get(exit["exit_reason"] or "")
            if contact is not None and status and contact.campaign_status != status:
                contact = ctx.crm.save_contact(contact.model_copy(update={"campaign_status": status}))
                mirror.upsert_contacts(ctx.engine, [contact], ctx.clock.now())
    except Exception as exc:  # the sends stand; the write-back is retried by the next run
        return [f"CRM write-back of {len(updates)} sequence(s) failed, will retry next run: {exc}"]
    ledger.mark_synced(ctx.engine, [r.id for r in rows])
    mirror.mark_exits_synced(ctx.engine, list(exits))
    return []
