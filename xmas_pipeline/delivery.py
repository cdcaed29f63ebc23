"""Use case: send the steps whose time has come, exactly once.

For the steps it is given, a delivery run decides what may go (suppressed, stopped, booked: skipped
with the reason; later than the journey's ``max_lateness``: recorded late unless the run was asked to
``send_late``), then works batch by batch: claim the batch's ledger rows, render, freeze the rendered
messages in the rows, renew the claim (the fence), hand the batch to the sender under an idempotency
key, record the outcome on the rows it still holds. A run that finds it lost a claim stops sending. A
batch whose run died in doubt is taken over whole after the lease and resent with the same key and the
same bytes. Afterwards the "Email N Sent" dates and any stops go back to the CRM, one call per sequence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import sqlalchemy as sa

from xmas_pipeline.campaign.clock import Clock, wall_now
from xmas_pipeline.campaign.durations import describe
from xmas_pipeline.campaign.journey import ExitReason, Journey, Journeys
from xmas_pipeline.campaign.plan import call_variables
from xmas_pipeline.campaign.rendering import TemplateError, TemplateSource, render, source_hash
from xmas_pipeline.campaign.timetable import local_time
from xmas_pipeline.campaign.tokens import unsubscribe_token
from xmas_pipeline.campaign.variables import build_variables
from xmas_pipeline.crm.base import CRM, SequenceUpdate
from xmas_pipeline.mail.base import ConfigurationError, NotSent, OutgoingMessage, SendError, Sender
from xmas_pipeline.mail.compose import compose, unsubscribe_url
from xmas_pipeline.store import ledger, mirror, suppressions
from xmas_pipeline.store.ledger import Claim, Due

log = logging.getLogger(__name__)

BOOKED = {"booked", "completed"}
STRAGGLER_AGE = dt.timedelta(minutes=10)  # a sent row still unsynced after this is any run's to write back
# What a marketer sees in the contact's "Christmas Campaign Status" when a sequence stops.
CONTACT_STATUS_FOR_EXIT = {"unsubscribed": "Unsubscribed", "complained": "Unsubscribed", "bounced": "Bounced"}


@dataclass
class DeliveryContext:
    engine: sa.Engine
    crm: CRM
    sender: Sender
    journeys: Journeys
    load_templates: Callable[[], dict[str, TemplateSource]]  # called once, on first use
    clock: Clock
    public_url: str
    unsubscribe_secret: str
    run_id: str | None = None
    lease: dt.timedelta = ledger.DEFAULT_LEASE
    # Leases are about real processes, so they follow the wall clock even when the campaign clock is
    # pinned; tests pass their own to move it.
    wall: Callable[[], dt.datetime] = wall_now
    _templates: dict[str, TemplateSource] | None = field(default=None, repr=False)

    @property
    def templates(self) -> dict[str, TemplateSource]:
        if self._templates is None:
            self._templates = self.load_templates()
        return self._templates

    @property
    def campaign(self) -> Journey:
        """The home journey (the nurture): it sets the calendar the daily partitions follow."""
        return self.journeys.home

    def journey(self, name: str) -> Journey:
        return self.journeys.get(name)


@dataclass
class DeliveryReport:
    sent: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    late: list[dict] = field(default_factory=list)  # not sent: later than max_lateness (a send_late backfill sends them)
    failed: list[dict] = field(default_factory=list)  # retried by a later run
    held: list[dict] = field(default_factory=list)  # the provider's answer leaves it unclear: an operator decides
    in_doubt: list[dict] = field(default_factory=list)  # handed over, outcome unknown: resumed after the lease
    lost: list[dict] = field(default_factory=list)  # claims another run took over from this one
    not_yet_due: int = 0
    already_done: int = 0  # finished, or in another run's hands
    resumed: int = 0
    crm_errors: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped sending early
    configuration_error: bool = False  # the stop needs a person to fix the setup

    def merge(self, other: DeliveryReport) -> None:
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, bool):
                setattr(self, f.name, mine or theirs)
            elif isinstance(mine, int):
                setattr(self, f.name, mine + theirs)
            elif theirs:
                setattr(self, f.name, theirs)


def _row(claim_or_due: Claim | Due, **extra) -> dict:
    return {"email": claim_or_due.email, "step": claim_or_due.step, **extra}


def _eligibility(
    ctx: DeliveryContext, due: list[Due], *, send_late: bool
) -> tuple[list[Due], list[tuple[Due, str]], dict[str, sa.RowMapping]]:
    """Which steps may still go, why the others may not, and their sequences (for rendering)."""
    keys = list({d.sequence_key for d in due})
    emails = list({d.email for d in due})
    seqs = mirror.load_sequences(ctx.engine, keys)
    suppressed = suppressions.suppressed(ctx.engine, emails)
    booking = mirror.booking_statuses(ctx.engine, emails)
    # A send_late backfill may reach a sequence that completed because its late steps counted as done.
    allowed = {"active", "completed"} if send_late else {"active"}
    ok, skips, booked_keys = [], [], []
    for d in due:
        seq = seqs.get(d.sequence_key)
        if seq is None:
            skips.append((d, "no such sequence"))
        elif d.email in suppressed:
            skips.append((d, f"suppressed: {suppressed[d.email]}"))
        elif seq["status"] not in allowed:
            skips.append((d, f"sequence {seq['status']}" + (f": {seq['exit_reason']}" if seq["exit_reason"] else "")))
        elif (booking.get(d.email) or "").strip().lower() in BOOKED and _exits_on_booking(ctx, d):
            skips.append((d, "booked a call"))
            booked_keys.append(d.sequence_key)
        else:
            ok.append(d)
    if booked_keys:
        mirror.set_status(ctx.engine, booked_keys, "exited", "booked a call", ctx.clock.now())
    return ok, skips, seqs


def _exits_on_booking(ctx: DeliveryContext, due: Due) -> bool:
    """A booked call ends the nurture, not the reminders about that very call."""
    return ExitReason.BOOKED_CALL in ctx.journey(due.campaign).exits


def profile_of(seq: sa.RowMapping) -> dict:
    """What the templates know about the lead: the signup as stored, with the sequence's columns as defaults."""
    profile = json.loads(seq["profile"]) if seq["profile"] else {}
    for column in ("first_name", "business_name", "assessment_score",
                   "red_systems", "orange_systems", "yellow_systems", "green_systems"):
        profile.setdefault(column, seq[column])
    return profile


def message_for(
    ctx: DeliveryContext,
    journey: Journey,
    step: int,
    *,
    email: str,
    sequence_key: str,
    profile: dict,
    segment: str | None,
    key: str,
    event_at: dt.datetime | None = None,
    timezone: str | None = None,
    template_name: str | None = None,
    subject_prefix: str = "",
) -> OutgoingMessage:
    """One step of a journey rendered for one person, with its unsubscribe link and compliance footer."""
    name = template_name or journey.step(step).template
    template = ctx.templates.get(name)
    if template is None:
        raise TemplateError(f"template {name!r} for step {step} of {journey.name} does not exist")
    token = unsubscribe_token(ctx.unsubscribe_secret, sequence_key)
    unsub = unsubscribe_url(ctx.public_url, token)
    variables = build_variables(
        profile=profile, segment=segment, campaign=journey, step=step, now=ctx.clock.now(), unsubscribe_url=unsub
    )
    if event_at is not None:  # reminders about a booked call say when it is, in the reader's zone
        variables.update(call_variables(event_at, timezone or journey.timezone))
    rendered = render(template, variables)
    if subject_prefix:
        rendered = dataclasses.replace(rendered, subject=f"{subject_prefix}{rendered.subject}")
    return compose(
        campaign=journey,
        rendered=rendered,
        to=email,
        key=key,
        unsub_url=unsub,
        token=token,
        tags={"campaign": journey.slug, "step": str(step), "segment": segment or "unknown"},
    )


def _render(ctx: DeliveryContext, claim: Claim, seq: sa.RowMapping, key: str) -> dict:
    message = message_for(
        ctx, ctx.journey(claim.campaign), claim.step, email=claim.email, sequence_key=claim.sequence_key,
        profile=profile_of(seq), segment=seq["segment"], key=key, event_at=seq["event_at"],
        timezone=seq["timezone"], template_name=claim.template,
    )
    return dataclasses.asdict(message)


def _template_hash(ctx: DeliveryContext, claim: Claim) -> str | None:
    """The source version of the template this claim was just rendered from (lineage)."""
    template = ctx.templates.get(claim.template or ctx.journey(claim.campaign).step(claim.step).template)
    return source_hash(template) if template is not None else None


@dataclass
class _Batch:
    key: str  # the provider's idempotency key for this exact group of messages
    items: list[tuple[Claim, dict]]
    resumed: bool = False

    @property
    def ids(self) -> list[int]:
        return [cl.id for cl, _ in self.items]


STALE = "stale"  # the courier's answer for a batch whose fence grew too old while it waited


class _Courier:
    """One background thread that hands frozen, fenced batches to the provider, in order.

    It is what lets a run render and freeze batch N+1 while the provider (and its rate limit) holds
    batch N. It never touches the ledger: the run's thread decides what goes in and records what comes
    out. A batch whose fence is older than ``max_age`` when its turn comes (the call before it was slow)
    comes back STALE, unsent, for the run to fence again. After an answer that refuses the whole run
    (NotSent: bad key, unverified domain, quota) or an unexpected error, it hands nothing more over:
    the batches behind come back as None, never seen by the provider.
    """

    def __init__(self, sender: Sender, wall: Callable[[], dt.datetime], max_age: dt.timedelta) -> None:
        self._sender = sender
        self._wall = wall
        self._max_age = max_age
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._halted = False  # written by the courier's thread only
        self.busy_s = 0.0  # time spent in the provider's hands (pacing included)
        self._thread = threading.Thread(target=self._work, name="delivery-courier", daemon=True)
        self._thread.start()

    def submit(self, batch: _Batch, fenced_at: dt.datetime) -> Future:
        future: Future = Future()
        self._jobs.put((batch, fenced_at, future))
        return future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            batch, fenced_at, future = job
            if self._halted:
                future.set_result(None)
                continue
            if self._wall() - fenced_at > self._max_age:
                future.set_result(STALE)
                continue
            started = time.perf_counter()
            try:
                future.set_result(self._sender.send(batch.key, [OutgoingMessage(**m) for _, m in batch.items]))
            except SendError as exc:
                # In doubt (plain SendError): the next batches may still go, as they would one by one.
                self._halted = isinstance(exc, NotSent)
                future.set_exception(exc)
            except BaseException as exc:  # noqa: BLE001 - handed to the run's thread, which re-raises it
                self._halted = True
                future.set_exception(exc)
            finally:
                self.busy_s += time.perf_counter() - started


class DeliveryRun:
    """One run's sending, in phases a caller can also drive one at a time (tests of the fence do).

    ``run()`` is ``prepare()``, then ``claim_next()`` and ``send_next()`` for the first batch, then the
    same pipelined (the next batch is claimed, rendered and frozen while the provider has the one
    before), then ``finish()``. Every ledger step costs a fixed number of statements per batch.
    """

    def __init__(self, ctx: DeliveryContext, due: list[Due], *, send_late: bool = False) -> None:
        self.ctx = ctx
        self.due = due
        self.send_late = send_late
        self.token = ledger.new_token()
        self.report = DeliveryReport()
        self._queue: list[Due] = []
        self._batches: list[_Batch] = []
        self._seqs: dict[str, sa.RowMapping] = {}
        self._touched: set[str] = set()
        self._fenced_at = ctx.wall()
        self.timings: Counter[str] = Counter()  # seconds this run's thread spent per phase (bench/send.py prints them)

    @contextmanager
    def _phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += time.perf_counter() - started

    @property
    def size(self) -> int:
        return max(1, self.ctx.sender.max_batch)

    # -- deciding ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Set aside what is not due yet, record what may not go (skipped) or is too late, queue the rest."""
        ctx, report = self.ctx, self.report
        now = ctx.clock.now()
        ready = [d for d in self.due if d.due_at <= now and (self.send_late or d.status != ledger.LATE)]
        report.not_yet_due = sum(1 for d in self.due if d.due_at > now)
        expired = [d for d in ready if d.due_at >= ctx.journey(d.campaign).end]
        ready = [d for d in ready if d.due_at < ctx.journey(d.campaign).end]
        ok, skips, self._seqs = _eligibility(ctx, ready, send_late=self.send_late)
        skips += [(d, f"expired: due {local_time(ctx.journey(d.campaign), d.due_at)}, after the end of "
                      f"{d.campaign}") for d in expired]
        ledger.mark_skipped(ctx.engine, skips, stale_before=ctx.wall() - ctx.lease)
        report.skipped.extend(_row(d, reason=why) for d, why in skips)

        lates = []
        for d in ok:
            late_by = now - d.due_at
            max_late = ctx.journey(d.campaign).late_send.max_lateness
            # A claim already in flight is finished whatever its age: its message may be with the provider.
            if late_by > max_late and not (self.send_late or d.late_ok) and d.status != ledger.CLAIMED:
                why = (f"late: due {local_time(ctx.journey(d.campaign), d.due_at)}, reached {describe(late_by)} later "
                       f"(max_lateness {describe(max_late)}); a backfill of that day with send_late: true sends it")
                lates.append((d, late_by, why))
            else:
                self._queue.append(d)
        ledger.mark_late(ctx.engine, lates)
        report.late.extend(_row(d, reason=why, late_by_s=int(by.total_seconds())) for d, by, why in lates)
        self._touched.update(d.sequence_key for d in self.due if d.due_at <= now)

    # -- claiming ----------------------------------------------------------------------------------

    def claim_next(self) -> bool:
        """Claim, render and freeze the next batch of queued steps. False when the queue is empty or the run stopped."""
        ctx, report = self.ctx, self.report
        while self._queue and self.report.stopped is None:
            chunk, self._queue = self._queue[: self.size], self._queue[self.size :]
            ids = [d.id for d in chunk]
            taken: set[int] = set()
            wall = ctx.wall()
            with self._phase("claim"):
                # In-doubt batches first, whole: same key, same bytes, so the provider can recognise them.
                for key in ledger.expired_batches(ctx.engine, ids, wall, ctx.lease):
                    claims = ledger.take_over(ctx.engine, key, token=self.token, wall=wall, lease=ctx.lease,
                                              run_id=ctx.run_id)
                    if claims:
                        self._batches.append(_Batch(key, [(cl, cl.message) for cl in claims], resumed=True))
                        report.resumed += len(claims)
                        taken.update(cl.id for cl in claims)
                fresh = ledger.claim(ctx.engine, [i for i in ids if i not in taken], token=self.token, wall=wall,
                                     lease=ctx.lease, run_id=ctx.run_id, send_late=self.send_late)
            report.already_done += len(ids) - len(fresh) - len(taken & set(ids))
            if fresh:
                self._freeze(fresh)
            if self._batches:
                return True
        return False

    def _freeze(self, claims: list[Claim]) -> None:
        ctx = self.ctx
        batches: list[_Batch] = []
        fresh: list[tuple[Claim, dict, int]] = []
        failures = []
        with self._phase("render"):
            for cl in claims:
                if cl.message is not None:  # handed over before and refused for now: the same bytes, on their own key
                    batches.append(_Batch(cl.message["key"], [(cl, cl.message)]))
                    continue
                handoffs = cl.handoffs + 1
                try:
                    message = _render(ctx, cl, self._seqs[cl.sequence_key], ledger.provider_key(cl.key, handoffs))
                except (TemplateError, KeyError) as exc:
                    reason = str(exc) if isinstance(exc, TemplateError) else f"no sequence {cl.sequence_key}"
                    failures.append((cl.id, ledger.failed(reason, keep_message=False)))
                    self.report.failed.append(_row(cl, error=reason))
                    continue
                fresh.append((cl, message, handoffs))
            hashes = {cl.id: _template_hash(ctx, cl) for cl, _, _ in fresh}
        with self._phase("freeze"):
            if failures:
                ledger.settle(ctx.engine, self.token, failures)
            if fresh:
                keys = [m["key"] for _, m, _ in fresh]
                key = keys[0] if len(fresh) == 1 else ledger.batch_key(keys, self.token)
                batches.insert(0, _Batch(key, [(cl, m) for cl, m, _ in fresh]))
            handoffs = {cl.id: h for cl, _, h in fresh}
            lost = ledger.freeze(
                ctx.engine, self.token,
                [(cl, m, b.key, handoffs.get(cl.id, cl.handoffs)) for b in batches for cl, m in b.items],
                template_hashes=hashes,
            )
        self._batches.extend(batches)
        if lost:
            self._lost([cl for b in batches for cl, _ in b.items if cl.id in lost])

    # -- sending -----------------------------------------------------------------------------------

    def send_next(self) -> bool:
        """Hand the next frozen batch to the provider if this run still holds it. False when none is left."""
        if not self._batches or self.report.stopped is not None:
            return False
        batch = self._batches.pop(0)
        if not self._fence(batch):
            return False
        with self._phase("provider"):
            try:
                outcome = self.ctx.sender.send(batch.key, [OutgoingMessage(**m) for _, m in batch.items])
            except SendError as exc:
                outcome = exc
        return self._record(batch, outcome)

    def _fence(self, batch: _Batch) -> bool:
        """Renew every claim this run holds; the batch may go only if all of it is still ours."""
        with self._phase("fence"):
            self._fenced_at = self.ctx.wall()
            held = ledger.renew(self.ctx.engine, self.token, self._fenced_at)
        if any(cl.id not in held for cl, _ in batch.items):
            self._lost([cl for cl, _ in batch.items if cl.id not in held])
            return False
        return True

    def _record(self, batch: _Batch, outcome: list | SendError | None) -> bool:
        """Record what the provider said about a batch (None: the courier never handed it over)."""
        ctx, report = self.ctx, self.report
        if outcome is None:
            with self._phase("settle"):
                ledger.release(ctx.engine, self.token, [] if batch.resumed else batch.ids,
                               f"not sent: {report.stopped or 'the run stopped before this message'}")
            return False
        if isinstance(outcome, NotSent):
            report.stopped = str(outcome)
            report.configuration_error = isinstance(outcome, ConfigurationError)
            # The provider took none of it: every claim this run never handed over goes back, retryable.
            # (A resumed batch stays claimed: the run that died may have handed it over.)
            self._batches.insert(0, batch)
            with self._phase("settle"):
                ledger.release(ctx.engine, self.token, self._never_handed_over(), f"not sent: {outcome}")
            report.failed.extend(_row(cl, error=f"not sent: {outcome}") for cl, _ in batch.items)
            log.error("stopped sending: %s", outcome)
            return False
        if isinstance(outcome, SendError):
            # The provider may or may not have them: the claims stay, and a later run resumes the batch.
            report.in_doubt.extend(_row(cl, error=str(outcome)) for cl, _ in batch.items)
            log.warning("send of batch %s failed, will resume after the lease: %s", batch.key, outcome)
            return True
        now = ctx.clock.now()
        outcomes = []
        for (cl, m), result in zip(batch.items, outcome):
            if result.ok:
                outcomes.append((cl.id, ledger.sent(ctx.sender.name, result.provider_id, now)))
                report.sent.append(_row(cl, subject=m["subject"], provider_id=result.provider_id))
            elif result.uncertain:
                outcomes.append((cl.id, ledger.held(result.error or "outcome unclear")))
                report.held.append(_row(cl, error=result.error))
            elif result.permanent:
                why = f"refused by {ctx.sender.name}: {result.error}"
                outcomes.append((cl.id, ledger.refused(why)))
                report.skipped.append(_row(cl, reason=why))
            else:
                outcomes.append((cl.id, ledger.failed(result.error or "refused for now", keep_message=True)))
                report.failed.append(_row(cl, error=result.error))
        with self._phase("settle"):
            lost = ledger.settle(ctx.engine, self.token, outcomes)
        if lost:
            # Sent by us after another run took the claim over: that run resends the same key and bytes,
            # which the provider recognises (Resend, outbox); SMTP has no such key (see README).
            self._lost([cl for cl, _ in batch.items if cl.id in lost])
        return True

    def _lost(self, claims: list[Claim]) -> None:
        report = self.report
        report.lost.extend(_row(cl) for cl in claims)
        report.stopped = (f"lost the claim on {len(claims)} message(s) to another run (its lease ran out); "
                          f"stopped sending: the other run sends them")
        # Frozen batches this run never handed over are given back now rather than at the end of the lease.
        ledger.release(self.ctx.engine, self.token, self._never_handed_over(), "not sent: the run that claimed it stopped")
        log.warning(report.stopped)

    def _never_handed_over(self) -> list[int]:
        """Empty the batch list; the ids of claims no provider ever saw (resumed batches may have been seen)."""
        ids = [cl.id for b in self._batches if not b.resumed for cl, _ in b.items]
        self._batches.clear()
        return ids

    # -- after -------------------------------------------------------------------------------------

    def finish(self) -> DeliveryReport:
        ctx = self.ctx
        if self._batches:  # stopped with batches never handed over
            ledger.release(ctx.engine, self.token, self._never_handed_over(), "not sent: the run stopped before this message")
        ledger.complete_sequences(ctx.engine, self._touched, ctx.clock.now())
        self.report.crm_errors.extend(sync_crm(ctx))
        return self.report

    def run(self) -> DeliveryReport:
        with self._phase("prepare"):
            self.prepare()
        # The first batch goes alone: a run the provider refuses outright (bad key, unverified domain)
        # stops before it has claimed anything more.
        if self.claim_next() and self.send_next():
            self._pipeline()
        with self._phase("finish"):
            return self.finish()

    def _pipeline(self) -> None:
        """Send the rest with the provider always holding one batch and the next one waiting behind it.

        A batch is handed to the courier only after its freeze and its fence succeeded on this thread,
        and at most one batch waits behind the one in the provider's hands. A fence older than a tenth of
        the lease when the courier gets to it (the call before was slow) is renewed before the batch
        goes, so the provider is handed a batch only under a fresh fence, as ``send_next`` does.
        Outcomes are recorded here, in order, fenced by the token as always.
        """
        courier: _Courier | None = None
        in_flight: deque[tuple[_Batch, Future]] = deque()
        try:
            while True:
                while len(in_flight) < 2 and self.report.stopped is None and (self._batches or self.claim_next()):
                    batch = self._batches.pop(0)
                    if not self._fence(batch):
                        break
                    courier = courier or _Courier(self.ctx.sender, self.ctx.wall, self.ctx.lease / 10)
                    in_flight.append((batch, courier.submit(batch, self._fenced_at)))
                if not in_flight:
                    return
                batch, future = in_flight.popleft()
                with self._phase("waiting for the provider"):
                    try:
                        outcome = future.result()
                    except SendError as exc:
                        outcome = exc
                if outcome is STALE:
                    if self.report.stopped is None and self._fence(batch):
                        in_flight.append((batch, courier.submit(batch, self._fenced_at)))
                    elif not batch.resumed:  # never handed over: back to the ledger, retryable
                        with self._phase("settle"):
                            ledger.release(self.ctx.engine, self.token, batch.ids,
                                           "not sent: the run stopped before this message")
                    continue
                self._record(batch, outcome)
        finally:
            if courier is not None:
                courier.close()
                self.timings["provider (courier thread, overlapped)"] += courier.busy_s


def deliver(ctx: DeliveryContext, due: list[Due], *, send_late: bool = False) -> DeliveryReport:
    """Send what is due now among ``due``; later steps wait for a later run."""
    return DeliveryRun(ctx, due, send_late=send_late).run()


def sync_crm(ctx: DeliveryContext) -> list[str]:
    """Tell the CRM what happened, coalesced: one update per sequence (and per stopped contact).

    "Email N Sent" dates and completion go to the sequence row; a stopped sequence (unsubscribed,
    bounced, booked) is marked completed there and its contact's campaign status says why, so
    marketers see it in Notion. Returns errors; everything not written is retried by the next run.
    """
    # This run's sends, and what older runs left behind: a concurrent run writes back its own.
    rows = ledger.unsynced(ctx.engine, run_id=ctx.run_id, stragglers_before=ctx.clock.now() - STRAGGLER_AGE)
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
