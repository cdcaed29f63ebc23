"""Reading a campaign file; validation errors name the field and the file."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from xmas_pipeline.campaign.models import Campaign


class CampaignFileError(ValueError):
    pass


def parse_campaign(text: str, source: str = "<campaign>") -> Campaign:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CampaignFileError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CampaignFileError(f"{source} must be a YAML mapping of campaign fields")
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise CampaignFileError(f"{source} is not a valid campaign: {problems}") from exc


def load_campaign(path: Path | str) -> Campaign:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CampaignFileError(f"cannot read campaign file {path}: {exc.strerror}; set XMAS_CAMPAIGN_FILE") from exc
    return parse_campaign(text, str(path))


def templates_dir(campaign_file: Path | str) -> Path:
    """File templates live beside the campaign file, one folder per template name."""
    return Path(campaign_file).resolve().parent / "templates"


def load_file_templates(campaign: Campaign, campaign_file: Path | str) -> dict:
    """Each step's template from ``templates/<name>/{subject.txt,body.html,body.txt}``; missing parts read as empty."""
    from xmas_pipeline.campaign.rendering import TemplateSource

    root = templates_dir(campaign_file)
    out = {}
    for step in campaign.steps:
        folder = root / step.template

        def part(filename: str) -> str:
            path = folder / filename
            return path.read_text(encoding="utf-8") if path.is_file() else ""

        if folder.is_dir():
            out[step.template] = TemplateSource(
                name=step.template, subject=part("subject.txt"), html=part("body.html"), text=part("body.txt")
            )
    return out
