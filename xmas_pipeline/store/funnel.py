"""The campaign funnel: per journey, step and segment, how far leads got, in four GROUP BY queries.

Everything is counted by the database (no row reaches Python), so the cost is a few scans of the
ledger and the sequences whatever the number of leads. Per-message counts come from the ledger and the
provider's webhooks; the stops that end a whole sequence (unsubscribed, booked a call) are counted on the
last step the lead was sent before stopping: "stopped after email N" is what a marketer asks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from xmas_pipeline.campaign.journey import ExitReason
from xmas_pipeline.store.ledger import DONE, FAILED, HELD, LATE, SKIPPED
from xmas_pipeline.store.schema import contacts, deliveries, message_events, sequences

KEYS = ["journey", "step", "segment"]
COUNTS = ["enrolled", "due", "sent", "delivered", "opened", "clicked", "skipped", "late", "failed",
          "unsubscribed", "bounced", "complained", "booked_call"]
BOOKED_STATUSES = ("booked", "completed")  # contacts.booking_status, lower-cased (as delivery reads it)
OPENS_NOTE = ("Opens are approximate: Apple Mail Privacy Protection opens every message it receives (opens "
              "too high), and clients that block images never report one (opens too low). A click also counts "
              "as an open. Clicks, bounces, unsubscribes and booked calls are exact.")

d, s, m = deliveries.c, sequences.c, message_events.c


@dataclass
class Funnel:
    steps: pd.DataFrame  # KEYS + COUNTS, one row per journey, step and segment (step 0: stopped before any email)
    skipped: pd.DataFrame  # journey, step, segment, reason, skipped
    sequences: int  # leads enrolled (one sequence per lead and journey)

    def totals(self) -> dict[str, int]:
        """Whole-campaign numbers; ``enrolled`` counts sequences, not ledger rows (one per step)."""
        out = {c: int(self.steps[c].sum()) for c in COUNTS}
        out["enrolled"] = self.sequences
        return out


def _count_if(condition) -> sa.ColumnElement:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def _segment(column) -> sa.ColumnElement:
    return sa.func.coalesce(column, "")


def _frame(rows, columns: list[str], keys: list[str]) -> pd.DataFrame:
    """Rows as a frame, a missing segment (NULL) read as "" and merged with any "" group."""
    frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
    frame["segment"] = frame["segment"].fillna("")
    return frame.groupby(keys, as_index=False, sort=False).sum() if frame.duplicated(keys).any() else frame


def compute(engine: sa.Engine, journeys: Iterable[str], now: dt.datetime, *, booking_goal: Iterable[str] = ()) -> Funnel:
    """The funnel of ``journeys`` at ``now``.

    ``booking_goal``: journeys a booked call ends; a lead of one of those whose contact shows a booked call
    counts as booked even when the booking came after the sequence completed.
    """
    names = list(journeys)
    goal = [g for g in booking_goal if g in names]
    # The ledger rows carry their sequence's segment: a single-table GROUP BY, no join to the sequences.
    # Grouped by the bare columns, in ix_deliveries_funnel's order, so the database streams the covering
    # index instead of sorting 7M rows (a missing segment, NULL, becomes "" in Python).
    ledger_seg = d.segment.label("segment")
    per_step = (
        sa.select(
            d.campaign, d.step, ledger_seg,
            sa.func.count().label("enrolled"),
            _count_if(d.due_at <= now).label("due"),
            _count_if(d.status.in_(DONE)).label("sent"),
            _count_if(d.status == SKIPPED).label("skipped"),
            _count_if(d.status == LATE).label("late"),
            _count_if(d.status.in_([FAILED, HELD])).label("failed"),
            _count_if(d.event == "bounced").label("bounced"),
            _count_if(d.event == "complained").label("complained"),
        )
        .where(d.campaign.in_(names))
        .group_by(d.campaign, d.step, d.segment)
    )
    # Unique messages: a lead who opens an email five times counts once. The events are folded per message
    # first, so the join starts from the (few) messages with events, not from the whole ledger.
    per_message = (
        sa.select(
            m.delivery_id,
            sa.func.max(sa.case((m.kind == "delivered", 1), else_=0)).label("delivered"),
            sa.func.max(sa.case((m.kind.in_(["opened", "clicked"]), 1), else_=0)).label("opened"),
            sa.func.max(sa.case((m.kind == "clicked", 1), else_=0)).label("clicked"),
        )
        .where(m.kind.in_(["delivered", "opened", "clicked"]), m.delivery_id.is_not(None))
        .group_by(m.delivery_id)
        .subquery()
    )
    engaged = (
        sa.select(
            d.campaign, d.step, ledger_seg,
            sa.func.sum(per_message.c.delivered), sa.func.sum(per_message.c.opened), sa.func.sum(per_message.c.clicked),
        )
        .select_from(per_message.join(deliveries, d.id == per_message.c.delivery_id))
        .where(d.campaign.in_(names))
        .group_by(d.campaign, d.step, d.segment)
    )
    # Reasons carry details (a date, a provider's words): grouped by what a marketer acts on.
    why = sa.case(
        (d.reason.like("suppressed:%"), d.reason),
        (d.reason.like("sequence %"), d.reason),
        (d.reason.like("dropped:%"), "dropped from the plan (e.g. too close to the call)"),
        (d.reason.like("expired:%"), "due after the journey's end"),
        (d.reason.like("refused by %"), "refused by the mail provider"),
        else_=sa.func.coalesce(d.reason, "no reason recorded"),
    )
    skipped = (
        sa.select(d.campaign, d.step, ledger_seg, why.label("reason"), sa.func.count().label("skipped"))
        .where(d.campaign.in_(names), d.status == SKIPPED)
        .group_by(d.campaign, d.step, d.segment, why)
    )
    stopped = _stops(names, goal)
    enrolled = sa.select(sa.func.count()).select_from(sequences).where(s.campaign.in_(names))
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # A few scans of big tables: compiling them (JIT) costs more than it saves.
            conn.execute(sa.text("SET LOCAL jit = off"))
        steps = _frame(conn.execute(per_step), [*KEYS, "enrolled", "due", "sent", "skipped", "late", "failed",
                                                "bounced", "complained"], KEYS)
        opens = _frame(conn.execute(engaged), [*KEYS, "delivered", "opened", "clicked"], KEYS)
        reasons = _frame(conn.execute(skipped), [*KEYS, "reason", "skipped"], [*KEYS, "reason"])
        stops = _frame(conn.execute(stopped), [*KEYS, "unsubscribed", "booked_call"], KEYS)
        total = conn.execute(enrolled).scalar_one()
    table = steps.merge(opens, on=KEYS, how="outer").merge(stops, on=KEYS, how="outer")
    for column in COUNTS:
        table[column] = table[column].fillna(0).astype(int) if column in table else 0
    order = {name: i for i, name in enumerate(names)}
    table = table.sort_values(KEYS, key=lambda col: col.map(order) if col.name == "journey" else col)
    reasons = reasons.sort_values(["journey", "step", "segment", "skipped"], ascending=[True, True, True, False])
    return Funnel(table[KEYS + COUNTS].reset_index(drop=True), reasons.reset_index(drop=True), int(total))


def _stops(names: list[str], goal: list[str]) -> sa.Select:
    """Unsubscribes and booked calls per journey, segment and the last step sent before them."""
    last_sent = (
        sa.select(sa.func.max(d.step)).where(d.sequence_key == s.sequence_key, d.status.in_(DONE)).scalar_subquery()
    )
    booking = sa.func.lower(sa.func.coalesce(contacts.c.booking_status, ""))
    booked = sa.or_(s.exit_reason == ExitReason.BOOKED_CALL.words,
                    sa.and_(s.campaign.in_(goal), booking.in_(BOOKED_STATUSES)) if goal else sa.false())
    unsubscribed = s.exit_reason == ExitReason.UNSUBSCRIBED.words
    # Only stopped or booked sequences reach the per-sequence lookup of their last step (an index probe).
    each = (
        sa.select(
            s.campaign.label("journey"),
            sa.func.coalesce(last_sent, 0).label("step"),
            _segment(s.segment).label("segment"),
            sa.case((unsubscribed, 1), else_=0).label("unsubscribed"),
            sa.case((booked, 1), else_=0).label("booked_call"),
        )
        .select_from(sequences.outerjoin(contacts, contacts.c.email == s.email))
        .where(s.campaign.in_(names), sa.or_(unsubscribed, booked))
        .subquery()
    )
    return (
        sa.select(each.c.journey, each.c.step, each.c.segment, sa.func.sum(each.c.unsubscribed), sa.func.sum(each.c.booked_call))
        .group_by(each.c.journey, each.c.step, each.c.segment)
    )


def markdown(funnel: Funnel) -> str:
    """The table a marketer reads in the asset's page."""
    if funnel.steps.empty:
        return "_no lead enrolled yet_"
    table = funnel.steps.copy()
    table["step"] = table["step"].map(lambda n: f"email {n}" if n else "before email 1")
    table["segment"] = table["segment"].replace("", "-")
    table.columns = [c.replace("_", " ") for c in table.columns]
    return table.to_markdown(index=False)


def skipped_markdown(funnel: Funnel) -> str:
    if funnel.skipped.empty:
        return "_nothing skipped_"
    table = funnel.skipped.copy()
    table["step"] = table["step"].map(lambda n: f"email {n}")
    table["segment"] = table["segment"].replace("", "-")
    return table.to_markdown(index=False)
