"""`xmas notion check` and `xmas notion init`: the Notion schema, verified or created."""

from __future__ import annotations

import argparse
import sys

from xmas_pipeline.crm.notion import NotionCRM
from xmas_pipeline.crm.notion_api import NotionCaller, make_client, notion_budget
from xmas_pipeline.crm.notion_schema import SEQUENCE_TITLE, Prop, mapping

TITLES = {"contacts": "Contacts", "sequences": "Email Sequences", "templates": "Email Templates"}
ENV = {"contacts": "XMAS_NOTION_CONTACTS_DB", "sequences": "XMAS_NOTION_SEQUENCES_DB", "templates": "XMAS_NOTION_TEMPLATES_DB"}


def _schema(prop: Prop) -> dict:
    if prop.type == "select":
        return {"select": {"options": [{"name": o} for o in prop.options]}}
    return {prop.type: {}}


def database_schema(database: str, overrides: dict) -> dict:
    props = {p.name: _schema(p) for p in mapping(database, overrides).values()}
    if database == "sequences":
        props[SEQUENCE_TITLE] = {"title": {}}
    return props


def init_databases(caller: NotionCaller, parent_page: str, overrides: dict, campaign_name: str) -> dict[str, str]:
    """Create the three databases under ``parent_page``; returns their ids."""
    ids = {}
    for database in ("contacts", "sequences", "templates"):
        schema = database_schema(database, overrides)
        if database == "sequences":
            campaign = mapping("sequences", overrides)["campaign"].name
            schema[campaign] = {"select": {"options": [{"name": campaign_name}]}}
        created = caller.call(
            "databases.create",
            caller.client.databases.create,
            parent={"type": "page_id", "page_id": parent_page},
            title=[{"type": "text", "text": {"content": f"{campaign_name}: {TITLES[database]}"}}],
            initial_data_source={"properties": schema},
        )
        ids[database] = created["id"]
    return ids


def cmd_check(args: argparse.Namespace, settings) -> int:
    settings.require_notion()
    crm = NotionCRM.from_settings(settings, settings.journeys().home)
    problems = crm.check_schema()
    if problems:
        print(f"Notion schema check failed: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        print("Add or fix these properties in Notion, or map their names in the campaign file (notion_properties).")
        return 1
    print("Notion schema OK: contacts, email sequences and email templates have every property the pipeline uses.")
    return 0


def cmd_init(args: argparse.Namespace, settings) -> int:
    if not settings.notion_token:
        print("xmas notion init needs NOTION_TOKEN (an internal integration's secret)", file=sys.stderr)
        return 2
    campaign = settings.journeys().home
    caller = NotionCaller(make_client(settings.notion_token, settings.notion_api_url), notion_budget(settings))
    ids = init_databases(caller, args.parent_page, campaign.notion_properties, campaign.name)
    print("Created the three databases. Export these, then run `xmas notion check`:")
    for database, db_id in ids.items():
        print(f"export {ENV[database]}={db_id}")
    return 0


def add_notion_commands(sub) -> None:
    notion = sub.add_parser("notion", help="check or create the Notion databases (XMAS_CRM=notion)")
    inner = notion.add_subparsers(dest="notion_command", required=True)
    check = inner.add_parser("check", help="list every missing or mistyped property; exit 1 if any")
    check.set_defaults(func=cmd_check)
    init = inner.add_parser("init", help="create the contacts, sequences and templates databases")
    init.add_argument("--parent-page", required=True, metavar="ID", help="the Notion page to create them under")
    init.set_defaults(func=cmd_init)
