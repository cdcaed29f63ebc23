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


# A template's parts, and the file each is read from; a variant's files carry its name before the suffix.
TEMPLATE_FILES = {"subject": "subject.txt", "html": "body.html", "text": "body.txt"}


def _variant_file(filename: str, variant: str) -> str:
    stem, _, suffix = filename.partition(".")
    return f"{stem}.{variant}.{suffix}"


def load_file_templates(campaign: Campaign, campaign_file: Path | str) -> dict:
    """Each step's template from ``templates/<name>/{subject.txt,body.html,body.txt}``; missing parts read as empty.

    Optional ``subject.deadline_passed.txt``, ``body.deadline_passed.html`` and ``body.deadline_passed.txt``
    beside them are the copy sent after the campaign's offer deadline; a part without its own
    ``deadline_passed`` file is the main template's.
    """
    from xmas_pipeline.campaign.rendering import DEADLINE_PASSED, TemplateSource

    root = templates_dir(campaign_file)
    out = {}
    for step in campaign.steps:
        folder = root / step.template
        if not folder.is_dir():
            continue

        def read(filename: str) -> str | None:
            path = folder / filename
            return path.read_text(encoding="utf-8") if path.is_file() else None

        parts = {part: read(filename) or "" for part, filename in TEMPLATE_FILES.items()}
        late = {part: read(_variant_file(filename, DEADLINE_PASSED)) for part, filename in TEMPLATE_FILES.items()}
        variant = None
        if any(text is not None for text in late.values()):
            variant = TemplateSource(
                name=step.template, **{part: text if text is not None else parts[part] for part, text in late.items()}
            )
        out[step.template] = TemplateSource(name=step.template, **parts, deadline_passed=variant)
    return out
