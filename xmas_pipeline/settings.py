"""Environment → typed settings. The only module that reads os.environ."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import stat
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, Field, ValidationError, field_validator

from xmas_pipeline.campaign.clock import Clock, parse_instant
from xmas_pipeline.campaign.journey import Journeys, load_journeys_from

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CAMPAIGNS_DIR = Path(__file__).resolve().parent / "campaign" / "files"
DEFAULT_CAMPAIGN_FILE = DEFAULT_CAMPAIGNS_DIR / "christmas-2026.yaml"  # the nurture alone (tests, one-journey setups)
NOTION_API_URL = "https://api.notion.com"
RESEND_API_URL = "https://api.resend.com"
UNSUBSCRIBE_SECRET_FILE = "unsubscribe.secret"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and what to set."""


class Settings(BaseModel):
    home: Path
    database_url: str
    campaign_file: Path | None = None  # one journey file; when unset, every journey in campaigns_dir
    campaigns_dir: Path = DEFAULT_CAMPAIGNS_DIR
    now: dt.datetime | None = None
    day_seconds: int = Field(default=86400, ge=1)
    delivery_cron: str = "*/15 * * * *"
    sensor_interval_s: int = Field(default=5, ge=1)
    claim_lease_s: int = Field(default=300, ge=0)

    crm: Literal["local", "notion"] = "local"
    notion_token: str | None = None
    notion_contacts_db: str | None = None
    notion_sequences_db: str | None = None
    notion_templates_db: str | None = None
    notion_api_url: str = NOTION_API_URL
    notion_rate: float = Field(default=3.0, gt=0)
    notion_retry_base_s: float = Field(default=0.5, ge=0)

    mailer: Literal["outbox", "smtp", "resend"] = "outbox"
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_tls: Literal["none", "starttls", "ssl"] = "starttls"
    resend_api_key: str | None = None
    resend_api_url: str = RESEND_API_URL
    resend_webhook_secret: str | None = None

    webhook_secret: str | None = None
    cal_secret: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    unsubscribe_secret: str
    # Where unsubscribe_secret was read from; None when it came from XMAS_UNSUBSCRIBE_SECRET.
    unsubscribe_secret_file: Path | None = None
    # Peers whose X-Forwarded-For is believed (XMAS_TRUSTED_PROXIES); empty: the TCP peer is the client.
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @field_validator("public_url", "notion_api_url", "resend_api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def journey_source(self) -> Path:
        """Where the journeys (and their templates folder) are read from."""
        return self.campaign_file or self.campaigns_dir

    def journeys(self) -> Journeys:
        """XMAS_CAMPAIGN_FILE's one journey when set, else every journey file in XMAS_CAMPAIGNS_DIR."""
        return load_journeys_from(self.campaign_file, self.campaigns_dir)

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def clock(self) -> Clock:
        return Clock(pinned=self.now, day_seconds=self.day_seconds)

    def require_notion(self) -> None:
        missing = [
            name
            for name, value in [
                ("NOTION_TOKEN", self.notion_token),
                ("XMAS_NOTION_CONTACTS_DB", self.notion_contacts_db),
                ("XMAS_NOTION_SEQUENCES_DB", self.notion_sequences_db),
            ]
            if not value
        ]
        if missing:
            raise SettingsError(
                f"XMAS_CRM=notion needs {', '.join(missing)}. Create the databases with "
                "`xmas notion init --parent-page ID` and export the ids it prints."
            )


FIELD_ENV = {
    "database_url": "XMAS_DATABASE_URL", "day_seconds": "XMAS_DAY_SECONDS", "sensor_interval_s": "XMAS_SENSOR_INTERVAL",
    "claim_lease_s": "XMAS_CLAIM_LEASE_SECONDS", "crm": "XMAS_CRM", "notion_rate": "XMAS_NOTION_RATE",
    "notion_retry_base_s": "XMAS_NOTION_RETRY_BASE", "mailer": "XMAS_MAILER", "smtp_tls": "XMAS_SMTP_TLS",
    "smtp_port": "XMAS_SMTP_PORT", "public_url": "XMAS_PUBLIC_URL", "delivery_cron": "XMAS_DELIVERY_CRON",
    "trusted_proxies": "XMAS_TRUSTED_PROXIES",
}


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) for its owner only (0700); an existing folder is left as it is."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        else:
            os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    return path


def tighten(path: Path) -> None:
    """Take group and other access away from a file that holds secrets or personal data (0600)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode) and mode & 0o077:
        os.chmod(path, 0o600)


def read_secret_file(path: Path) -> str:
    """The secret kept in ``path``, made 0600 if an older version left it readable to others."""
    value = path.read_text().strip()
    if not value:
        raise SettingsError(
            f"{path} is empty. Delete it to generate a new secret (links already sent stop working) "
            "or set the variable it stands for."
        )
    tighten(path)
    return value


def _secret_file(home: Path, name: str) -> str:
    """A per-installation random secret kept in XMAS_HOME (0600 in a 0700 folder), so links survive restarts."""
    path = home / name
    if path.exists():
        return read_secret_file(path)
    private_dir(home)
    tmp = home / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # never replaces: when two processes race, both keep the first one's secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return read_secret_file(path)


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    networks = []
    for item in raw.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(
                f"XMAS_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8, 127.0.0.1)"
            ) from None
    return tuple(networks)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read every XMAS_* (and NOTION_TOKEN, RESEND_*) variable; raise SettingsError naming a bad one."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    home = Path(get("XMAS_HOME") or PROJECT_ROOT / ".xmas").expanduser().resolve()
    now = None
    if get("XMAS_NOW"):
        try:
            now = parse_instant(get("XMAS_NOW"))
        except ValueError as exc:
            raise SettingsError(f"XMAS_NOW: {exc}") from exc

    def number(name: str, kind=int):
        raw = get(name)
        if raw is None:
            return None
        try:
            return kind(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}={raw!r} is not a number") from exc

    values = {
        "home": home,
        "database_url": get("XMAS_DATABASE_URL") or f"sqlite:///{home / 'xmas.db'}",
        "campaign_file": Path(get("XMAS_CAMPAIGN_FILE")) if get("XMAS_CAMPAIGN_FILE") else None,
        "campaigns_dir": Path(get("XMAS_CAMPAIGNS_DIR")) if get("XMAS_CAMPAIGNS_DIR") else None,
        "now": now,
        "day_seconds": number("XMAS_DAY_SECONDS"),
        "delivery_cron": get("XMAS_DELIVERY_CRON"),
        "sensor_interval_s": number("XMAS_SENSOR_INTERVAL"),
        "claim_lease_s": number("XMAS_CLAIM_LEASE_SECONDS"),
        "crm": get("XMAS_CRM"),
        "notion_token": get("NOTION_TOKEN"),
        "notion_contacts_db": get("XMAS_NOTION_CONTACTS_DB"),
        "notion_sequences_db": get("XMAS_NOTION_SEQUENCES_DB"),
        "notion_templates_db": get("XMAS_NOTION_TEMPLATES_DB"),
        "notion_api_url": get("XMAS_NOTION_API_URL"),
        "notion_rate": number("XMAS_NOTION_RATE", float),
        "notion_retry_base_s": number("XMAS_NOTION_RETRY_BASE", float),
        "mailer": get("XMAS_MAILER"),
        "smtp_host": get("XMAS_SMTP_HOST"),
        "smtp_port": number("XMAS_SMTP_PORT"),
        "smtp_user": get("XMAS_SMTP_USER"),
        "smtp_password": get("XMAS_SMTP_PASSWORD"),
        "smtp_tls": get("XMAS_SMTP_TLS"),
        "resend_api_key": get("RESEND_API_KEY"),
        "resend_api_url": get("XMAS_RESEND_API_URL"),
        "resend_webhook_secret": get("RESEND_WEBHOOK_SECRET"),
        "webhook_secret": get("XMAS_WEBHOOK_SECRET"),
        "cal_secret": get("XMAS_CAL_SECRET"),
        "public_url": get("XMAS_PUBLIC_URL"),
        "unsubscribe_secret": get("XMAS_UNSUBSCRIBE_SECRET") or _secret_file(home, UNSUBSCRIBE_SECRET_FILE),
        "unsubscribe_secret_file": None if get("XMAS_UNSUBSCRIBE_SECRET") else home / UNSUBSCRIBE_SECRET_FILE,
        "trusted_proxies": _networks(get("XMAS_TRUSTED_PROXIES") or ""),
    }
    try:
        return Settings(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{FIELD_ENV.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from exc
