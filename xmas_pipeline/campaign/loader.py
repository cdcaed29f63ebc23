"""Reading journey files and their file templates; validation errors name the field and the file.

A campaign file is a journey file (``campaign/journey.py``); these names stay for the one-file setup.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from xmas_pipeline.campaign.journey import Journey, JourneyFileError, load_journey, parse_journey

CampaignFileError = JourneyFileError
parse_campaign = parse_journey
load_campaign = load_journey


def templates_dir(campaign_file: Path | str) -> Path:
    """File templates live beside the journey files, one folder per template name."""
    path = Path(campaign_file)
    return (path if path.is_dir() else path.parent).resolve() / "templates"


# A template's parts, and the file each is read from; a variant's files carry its name before the suffix.
TEMPLATE_FILES = {"subject": "subject.txt", "html": "body.html", "text": "body.txt"}


def _variant_file(filename: str, variant: str) -> str:
    stem, _, suffix = filename.partition(".")
    return f"{stem}.{variant}.{suffix}"


def load_file_templates(journeys: Journey | Iterable[Journey], campaign_file: Path | str) -> dict:
    """Each step's template from ``templates/<name>/{subject.txt,body.html,body.txt}``; missing parts read as empty.

    Optional ``subject.deadline_passed.txt``, ``body.deadline_passed.html`` and ``body.deadline_passed.txt``
    beside them are the copy sent after the campaign's offer deadline; a part without its own
    ``deadline_passed`` file is the main template's.
    """
    from xmas_pipeline.campaign.rendering import DEADLINE_PASSED, TemplateSource

    root = templates_dir(campaign_file)
    out = {}
    steps = [s for j in ([journeys] if isinstance(journeys, Journey) else journeys) for s in j.steps]
    for step in steps:
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
