"""The project's three Notion databases, created in an emulator through the real `xmas notion init` code."""

from __future__ import annotations

from notion_client import Client

from xmas_pipeline.crm.notion_admin import init_databases
from xmas_pipeline.crm.notion_api import NotionCaller, RateBudget, make_client


def xmas_databases(emulator, campaign_name: str = "Christmas 2026", overrides: dict | None = None) -> dict[str, str]:
    """Create contacts/sequences/templates databases; returns the environment that selects them."""
    caller = NotionCaller(make_client(emulator.token, emulator.base_url), RateBudget(1000), retry_base_s=0.01)
    ids = init_databases(caller, emulator.root_page_id, overrides or {}, campaign_name)
    return {
        "XMAS_CRM": "notion",
        "NOTION_TOKEN": emulator.token,
        "XMAS_NOTION_API_URL": emulator.base_url,
        "XMAS_NOTION_CONTACTS_DB": ids["contacts"],
        "XMAS_NOTION_SEQUENCES_DB": ids["sequences"],
        "XMAS_NOTION_TEMPLATES_DB": ids["templates"],
        # Tests: the emulator's own limits apply; our budget and backoff stay out of the way.
        "XMAS_NOTION_RATE": "1000",
        "XMAS_NOTION_RETRY_BASE": "0.01",
    }


def data_source(emulator, database_id: str) -> str:
    client = Client(auth=emulator.token, base_url=emulator.base_url, retry=False)
    return client.databases.retrieve(database_id=database_id)["data_sources"][0]["id"]
