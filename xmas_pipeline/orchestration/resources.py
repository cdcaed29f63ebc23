"""The pipeline's one resource: its settings, from which the use cases build their backends."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import dagster as dg
import sqlalchemy as sa

from xmas_pipeline.backends import delivery_context
from xmas_pipeline.campaign.journey import Journeys
from xmas_pipeline.delivery import DeliveryContext
from xmas_pipeline.settings import UNSUBSCRIBE_SECRET_FILE, Settings, load_settings, read_secret_file
from xmas_pipeline.store.db import engine_for


class XmasResource(dg.ConfigurableResource):
    """Where the campaign keeps its state and which CRM and mailer it talks to (see README: Configuration).

    Fields hold environment variable names' values; secrets arrive as ``dg.EnvVar`` so the UI, run config
    and logs show the variable's name, never its value. The unsubscribe secret is either an ``EnvVar``
    (``xmas run`` exports it) or left out, and then read at run time from its 0600 file in ``home``.
    """

    home: str
    database_url: str
    campaign_file: Optional[str] = None
    campaigns_dir: str
    now: Optional[str] = None
    day_seconds: int = 86400
    claim_lease_s: int = 300
    crm: str = "local"
    notion_token: Optional[str] = None
    notion_contacts_db: Optional[str] = None
    notion_sequences_db: Optional[str] = None
    notion_templates_db: Optional[str] = None
    notion_api_url: Optional[str] = None
    notion_rate: float = 3.0
    notion_retry_base_s: float = 0.5
    mailer: str = "outbox"
    smtp_host: Optional[str] = None
    smtp_port: Optional[int] = None
    smtp_user: Optional[str] = None
    smtp_password: Optional[str] = None
    smtp_tls: str = "starttls"
    resend_api_key: Optional[str] = None
    resend_api_url: Optional[str] = None
    public_url: str = "http://127.0.0.1:8000"
    unsubscribe_secret: Optional[str] = None

    @classmethod
    def from_settings(cls, settings: Settings, secrets_from_env: bool = False) -> "XmasResource":
        values = {name: getattr(settings, name) for name in cls.model_fields}
        # Dagster config holds plain values: paths and instants travel as strings.
        values.update(home=str(settings.home), campaigns_dir=str(settings.campaigns_dir),
                      campaign_file=str(settings.campaign_file) if settings.campaign_file else None,
                      now=settings.now.isoformat() if settings.now else None)
        if secrets_from_env:
            for field, var in [
                ("notion_token", "NOTION_TOKEN"),
                ("smtp_password", "XMAS_SMTP_PASSWORD"),
                ("resend_api_key", "RESEND_API_KEY"),
            ]:
                if values[field] is not None:
                    values[field] = dg.EnvVar(var)
            if sa.engine.make_url(settings.database_url).password is not None:
                values["database_url"] = dg.EnvVar("XMAS_DATABASE_URL")  # a URL with a password is a secret
            values["unsubscribe_secret"] = (
                None if settings.unsubscribe_secret_file is not None else dg.EnvVar("XMAS_UNSUBSCRIBE_SECRET")
            )
        return cls(**values)

    def settings(self) -> Settings:
        fields = {k: v for k, v in self._as_config_dict().items() if v is not None}
        if fields.get("now"):
            from xmas_pipeline.campaign.clock import parse_instant

            fields["now"] = parse_instant(fields["now"])
        if not fields.get("unsubscribe_secret"):
            secret_file = Path(self.home) / UNSUBSCRIBE_SECRET_FILE
            fields.update(unsubscribe_secret=read_secret_file(secret_file), unsubscribe_secret_file=secret_file)
        return Settings(**fields)

    def _as_config_dict(self) -> dict:
        return {name: getattr(self, name) for name in type(self).model_fields}

    def journeys(self) -> Journeys:
        return self.settings().journeys()

    def engine(self):
        return engine_for(self.database_url)

    def delivery(self, run_id: str | None = None) -> DeliveryContext:
        return delivery_context(self.settings(), run_id=run_id)


def default_resource() -> XmasResource:
    return XmasResource.from_settings(load_settings(), secrets_from_env=True)
