"""Rendering templates safely: sandboxed Jinja2, HTML autoescaped, and a variable contract checked first.

The system we replaced sent empty templates and raw ``{{placeholders}}``. Here a template that is
empty, does not parse, or uses a variable the pipeline does not provide is refused before any send,
with a message that names the template, the part and the variable.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

#: Every variable a template may use; ``campaign.variables.build_variables`` provides exactly these.
PROVIDED_VARIABLES = frozenset(
    {
        "first_name", "business_name", "segment", "readiness_zone", "assessment_score",
        "red_systems", "orange_systems", "yellow_systems", "green_systems", "gps_score", "money_score",
        "weakest_system_1", "weakest_system_2", "tip_1", "tip_2", "tip_3", "revenue_leak",
        "days_to_deadline", "deadline_date", "booking_url", "campaign_name", "sender_name",
        "step", "total_steps", "unsubscribe_url",
    }
)

PARTS = ("subject", "html", "text")


class TemplateError(ValueError):
    """A template cannot be sent as it is; the message says which and why."""


@dataclass(frozen=True)
class TemplateSource:
    name: str
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


_html_env = SandboxedEnvironment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
_text_env = SandboxedEnvironment(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
_LEFTOVER = re.compile(r"\{\{|\}\}|\{%|%\}")


def _env(part: str) -> SandboxedEnvironment:
    return _html_env if part == "html" else _text_env


def check_template(template: TemplateSource | None, name: str = "") -> list[str]:
    """Every reason this template cannot be sent; [] when it honours the contract."""
    if template is None:
        return [f"template {name!r} does not exist"]
    problems = []
    for part in PARTS:
        source = getattr(template, part) or ""
        if not source.strip():
            problems.append(f"template {template.name!r}: {part} is empty")
            continue
        try:
            parsed = _env(part).parse(source)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(f"template {template.name!r}: {part} line {exc.lineno}: {exc.message}")
            continue
        for variable in sorted(meta.find_undeclared_variables(parsed) - PROVIDED_VARIABLES):
            problems.append(f"template {template.name!r}: {part} uses undefined variable {{{{ {variable} }}}}")
    return problems


def render(template: TemplateSource, variables: dict) -> Rendered:
    """Render all three parts or raise TemplateError; never returns an empty or half-filled message."""
    problems = check_template(template)
    if problems:
        raise TemplateError("; ".join(problems))
    out = {}
    for part in PARTS:
        try:
            value = _env(part).from_string(getattr(template, part)).render(**variables)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {template.name!r}: {part}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {template.name!r}: {part}: {exc}") from exc
        if _LEFTOVER.search(value):
            raise TemplateError(f"template {template.name!r}: {part} still contains template markup after rendering")
        if not value.strip():
            raise TemplateError(f"template {template.name!r}: {part} rendered empty")
        out[part] = value.strip()
    # A subject is one header line: newlines from a name or a template must not reach the header.
    out["subject"] = " ".join(out["subject"].split())
    return Rendered(**out)


def html_to_text(html: str) -> str:
    """A plain-text part for templates kept only as HTML (Notion's templates database)."""
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", html)
    text = re.sub(r"(?i)<br\s*/?>", "\n", text)
    text = re.sub(r"(?i)</(p|div|h[1-6]|li|tr)>", "\n\n", text)
    text = re.sub(r"(?i)<li[^>]*>", "- ", text)
    text = re.sub(r'(?is)<a[^>]*href="([^"]+)"[^>]*>(.*?)</a>', r"\2 (\1)", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = html_lib.unescape(text)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
