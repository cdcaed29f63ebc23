"""Every table of the local database, in one place (SQLAlchemy Core)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

metadata = sa.MetaData()


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, hands back aware UTC: SQLite keeps no offsets, and naive times are bugs here."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} reached the database; attach a timezone")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc)


inbound_events = sa.Table(
    "inbound_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(400), nullable=False, unique=True),
    sa.Column("kind", sa.String(40), nullable=False),  # "signup"
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the body as received, unknown fields included
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("client_ip", sa.String(64)),
    sa.Column("user_agent", sa.String(512)),
    # pending -> dispatched -> done; on error -> retry (backoff) ... -> dead
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),  # failed tries since (re)play
    sa.Column("dispatches", sa.Integer, nullable=False, default=0),  # never reset: makes each run_key new
    sa.Column("next_attempt_at", UTCDateTime),
    sa.Column("dispatched_at", UTCDateTime),
    sa.Column("run_key", sa.String(200)),
    sa.Column("last_error", sa.Text),
    sa.Column("done_at", UTCDateTime),
    sa.Index("ix_inbound_status", "status"),
)

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("email", sa.String(320), primary_key=True),  # lower-cased
    sa.Column("first_name", sa.String(200), nullable=False),
    sa.Column("business_name", sa.String(300)),
    sa.Column("segment", sa.String(16)),
    sa.Column("assessment_score", sa.Float),
    sa.Column("campaign_status", sa.String(60)),
    sa.Column("booking_status", sa.String(60)),
    sa.Column("call_date", UTCDateTime),
    sa.Column("crm_id", sa.String(64)),
    sa.Column("edited_at", UTCDateTime),  # the CRM's last edit, when it tells us
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

sequences = sa.Table(
    "sequences",
    metadata,
    sa.Column("sequence_key", sa.String(64), primary_key=True),
    sa.Column("seq_no", sa.BigInteger),  # tokens.sequence_number(sequence_key): an int64 join key
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("campaign", sa.String(120), nullable=False),
    sa.Column("first_name", sa.String(200), nullable=False),
    sa.Column("business_name", sa.String(300)),
    sa.Column("segment", sa.String(16), nullable=False),
    sa.Column("assessment_score", sa.Float),
    sa.Column("red_systems", sa.Integer, nullable=False, default=0),
    sa.Column("orange_systems", sa.Integer, nullable=False, default=0),
    sa.Column("yellow_systems", sa.Integer, nullable=False, default=0),
    sa.Column("green_systems", sa.Integer, nullable=False, default=0),
    sa.Column("signup_at", UTCDateTime, nullable=False),  # timetable anchor
    sa.Column("status", sa.String(16), nullable=False, default="active"),
    sa.Column("exit_reason", sa.String(200)),
    sa.Column("exit_synced", sa.Boolean),  # the stop (unsubscribe, bounce, booking) has reached the CRM
    sa.Column("profile", sa.Text),  # JSON SignupPayload: the personalisation the templates use
    sa.Column("crm_id", sa.String(64)),
    sa.Column("edited_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # When the sequence's steps got their ledger rows; NULL means "plan me" (e.g. a sequence first seen in the CRM).
    sa.Column("planned_at", UTCDateTime),
    sa.Column("timezone", sa.String(64)),  # the recipient's IANA zone, for send windows (else the journey's)
    sa.Column("event_at", UTCDateTime),  # what reminders count back from (the booked call's start)
    sa.Column("booking_uid", sa.String(200)),  # the Cal.com booking this sequence is about
    sa.Column("event_id", sa.Integer),  # the inbound event that started it
    sa.UniqueConstraint("email", "campaign", name="uq_sequence_email_campaign"),
    sa.Index("ix_sequences_unplanned", "planned_at", "status"),
)

# The delivery ledger: the system of record for "was step N of this sequence sent". Every step of a
# sequence gets its row when the sequence is planned (status "scheduled", with its due time), so what is
# owed on a day, what is overdue and what went out are all indexed queries on this one table.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sequence_key", sa.String(64), nullable=False),
    sa.Column("seq_no", sa.BigInteger),
    sa.Column("campaign", sa.String(120)),  # the journey this step belongs to
    # A copy of the sequence's segment (kept in step by ledger.copy_segments), so the funnel groups the
    # ledger without joining a million sequences to it.
    sa.Column("segment", sa.String(16)),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("template", sa.String(200)),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),  # the row's identity
    # scheduled -> claimed -> sent | failed (retried) | skipped | held ; late, expired, external: see store/ledger.py
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("due_at", UTCDateTime),
    sa.Column("late_by_s", sa.Integer),  # how late the step was when the system got to it (status late)
    sa.Column("late_ok", sa.Boolean),  # an operator asked for it to go however late (xmas retry)
    sa.Column("claim_token", sa.String(64)),
    sa.Column("claimed_at", UTCDateTime),  # renewed while the claiming run works; the lease runs from here
    sa.Column("batch_key", sa.String(200)),
    sa.Column("handoffs", sa.Integer),  # renders handed to a provider; >1 means a new provider key
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("message", sa.Text),  # the rendered message as JSON, frozen before the provider call
    sa.Column("subject", sa.String(500)),
    sa.Column("provider", sa.String(20)),
    sa.Column("provider_id", sa.String(200)),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("crm_synced", sa.Boolean, nullable=False, default=False),
    sa.Column("event", sa.String(20)),  # delivered / bounced / complained (provider webhooks)
    sa.Column("event_at", UTCDateTime),
    sa.Column("run_id", sa.String(64)),
    # Lineage: the inbound event that planned the row, and the template source its message was rendered from.
    sa.Column("event_id", sa.Integer),
    sa.Column("template_hash", sa.String(12)),  # first 12 hex of sha256 over the template's parts
    sa.UniqueConstraint("sequence_key", "step", name="uq_delivery_sequence_step"),
    sa.Index("ix_deliveries_status_due", "status", "due_at"),
    sa.Index("ix_deliveries_sent_at", "sent_at"),
    sa.Index("ix_deliveries_batch", "batch_key"),
    sa.Index("ix_deliveries_claim", "claim_token"),
    sa.Index("ix_deliveries_email", "email"),
    sa.Index("ix_deliveries_provider_id", "provider_id"),  # provider webhooks name the message by it
    # The funnel's covering index: its per-step counts read this, in group order, not the wide rows
    # (rendered messages). At 1M leads on SQLite the funnel takes 4.5 s instead of 11 s, for ~70 bytes a row.
    sa.Index("ix_deliveries_funnel", "campaign", "step", "segment", "status", "due_at", "event"),
)

# What the provider told us happened to each message (delivered, opened, clicked, bounced, complained),
# one row per webhook delivery: (svix_id, kind) is unique, so a replayed webhook is recorded once.
message_events = sa.Table(
    "message_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("svix_id", sa.String(200), nullable=False),
    sa.Column("delivery_id", sa.Integer),  # NULL: a message the ledger does not know (sent by someone else)
    sa.Column("provider_id", sa.String(200)),
    sa.Column("kind", sa.String(20), nullable=False),  # delivered / opened / clicked / bounced / soft_bounced / complained
    sa.Column("occurred_at", UTCDateTime, nullable=False),  # the provider's created_at
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("svix_id", "kind", name="uq_message_event_svix_kind"),
    sa.Index("ix_message_events_delivery_kind", "delivery_id", "kind"),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("email", sa.String(320), primary_key=True),
    sa.Column("reason", sa.String(40), nullable=False),  # unsubscribed / bounced / complained / manual
    sa.Column("source", sa.String(200)),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, index=True),
    sa.Column("campaign", sa.String(120), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # express (CASL: opt-in by positive action)
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("consented_at", UTCDateTime, nullable=False),
    sa.Column("client_ip", sa.String(64)),
    sa.Column("user_agent", sa.String(512)),
    sa.Column("event_id", sa.Integer),
    sa.Column("withdrawn_at", UTCDateTime),
    sa.UniqueConstraint("email", "campaign", name="uq_consent_email_campaign"),
)

# Every consent the pipeline was given (each signup, re-signup or booking), newest last: the proof
# CASL puts on the sender. ``consents`` keeps the first per journey; this keeps them all.
consent_events = sa.Table(
    "consent_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, index=True),
    sa.Column("campaign", sa.String(120), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # express / implied
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("consented_at", UTCDateTime, nullable=False),
    sa.Column("client_ip", sa.String(64)),
    sa.Column("user_agent", sa.String(512)),
    sa.Column("event_id", sa.Integer),
)

# Email templates mirrored from Notion's templates database (file templates are read from disk).
templates = sa.Table(
    "templates",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("text", sa.Text),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("edited_at", UTCDateTime),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("value", sa.String(80)),
)

# Rate budgets shared by every process of a deployment (store/ratelimit.py): one row per external
# API account; next_free is the epoch second from which the next call may go.
rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("name", sa.String(80), primary_key=True),
    sa.Column("next_free", sa.Float, nullable=False),
)
