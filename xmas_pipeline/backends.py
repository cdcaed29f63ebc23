"""The one place that turns settings into a CRM, a sender and templates (used by Dagster and the CLI)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from xmas_pipeline.campaign.loader import load_file_templates
from xmas_pipeline.campaign.journey import Journey, Journeys
from xmas_pipeline.campaign.rendering import TemplateSource, html_to_text
from xmas_pipeline.crm.base import CRM
from xmas_pipeline.delivery import DeliveryContext
from xmas_pipeline.mail.base import Sender
from xmas_pipeline.settings import Settings, SettingsError
from xmas_pipeline.store import mirror
from xmas_pipeline.store.db import engine_for
from xmas_pipeline.sync import sync_templates


def make_crm(settings: Settings, engine: sa.Engine, campaign: Journey) -> CRM:
    if settings.crm == "notion":
        settings.require_notion()
        from xmas_pipeline.crm.notion import NotionCRM

        return NotionCRM.from_settings(settings, campaign)
    from xmas_pipeline.crm.local import LocalCRM

    return LocalCRM(engine)


def make_sender(settings: Settings) -> Sender:
    if settings.mailer == "smtp":
        if not settings.smtp_host:
            raise SettingsError("XMAS_MAILER=smtp needs XMAS_SMTP_HOST (and usually XMAS_SMTP_PORT/USER/PASSWORD)")
        from xmas_pipeline.mail.smtp import SmtpSender

        default_port = {"ssl": 465, "starttls": 587, "none": 25}[settings.smtp_tls]
        return SmtpSender(
            host=settings.smtp_host,
            port=settings.smtp_port or default_port,
            user=settings.smtp_user,
            password=settings.smtp_password,
            tls=settings.smtp_tls,
        )
    if settings.mailer == "resend":
        if not settings.resend_api_key:
            raise SettingsError("XMAS_MAILER=resend needs RESEND_API_KEY (an API key with sending access)")
        from xmas_pipeline.mail.resend import ResendSender

        return ResendSender(api_key=settings.resend_api_key, api_url=settings.resend_api_url)
    from xmas_pipeline.mail.outbox import OutboxSender

    return OutboxSender(settings.outbox_dir)


def load_templates(settings: Settings, journeys: Journeys, engine: sa.Engine, crm: CRM) -> dict[str, TemplateSource]:
    """Every journey's templates from files (default) or from Notion's templates database (synced first)."""
    if journeys.home.template_source == "notion":
        sync_templates(engine, crm, settings.clock.now())
        return {
            t.name: TemplateSource(name=t.name, subject=t.subject, html=t.html, text=t.text or html_to_text(t.html))
            for t in mirror.load_templates(engine)
            if t.active
        }
    return load_file_templates(journeys, journeys.source)


def delivery_context(settings: Settings, run_id: str | None = None, journeys: Journeys | None = None) -> DeliveryContext:
    engine = engine_for(settings.database_url)
    journeys = journeys or settings.journeys()
    crm = make_crm(settings, engine, journeys.home)
    return DeliveryContext(
        engine=engine,
        crm=crm,
        sender=make_sender(settings),
        journeys=journeys,
        load_templates=lambda: load_templates(settings, journeys, engine, crm),
        clock=settings.clock,
        public_url=settings.public_url,
        unsubscribe_secret=settings.unsubscribe_secret,
        run_id=run_id,
        lease=dt.timedelta(seconds=settings.claim_lease_s),
    )
