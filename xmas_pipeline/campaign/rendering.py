"""Rendering templates safely: sandboxed Jinja2, HTML autoescaped, and a contract checked before any send.

The system we replaced sent empty templates and raw ``{{placeholders}}``, and told leads results they
never gave. Here a template is refused before any send, with a message naming the template, the part
and the variable, when it is empty, does not parse, uses a variable the pipeline does not provide, or
fails to render for any of the contract's sample signups (a minimal one with only email and first
name, full ones, one whose counts do not add up) sent before, on and after the offer deadline. A value
the lead did not give us is ``Unknown`` (see ``campaign.variables``) and cannot be printed, so a
template that prints one without branching on ``is known`` fails that check.

A template may carry a ``deadline_passed`` variant: the copy sent once the offer deadline is behind
the send date. Parts the variant does not have are the main template's.
"""

from __future__ import annotations

import functools
import hashlib
import html as html_lib
import re
from dataclasses import dataclass

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from xmas_pipeline.campaign.variables import contract_samples, is_known

#: Every variable a template may use; ``campaign.variables.build_variables`` provides exactly these.
PROVIDED_VARIABLES = frozenset(
    {
        "first_name", "business_name", "segment", "readiness_zone", "assessment_score",
        "red_systems", "orange_systems", "yellow_systems", "green_systems", "gps_score", "money_score",
        "weakest_system_1", "weakest_system_2", "tip_1", "tip_2", "tip_3", "revenue_leak", "has_results",
        "days_to_deadline", "deadline_date", "deadline_passed", "month_name",
        "booking_url", "campaign_name", "sender_name", "step", "total_steps", "unsubscribe_url",
        "call_date", "call_time",
    }
)

PARTS = ("subject", "html", "text")
DEADLINE_PASSED = "deadline_passed"


class TemplateError(ValueError):
    """A template cannot be sent as it is; the message says which and why."""


@dataclass(frozen=True)
class TemplateSource:
    name: str
    subject: str
    html: str
    text: str
    #: The copy sent after the campaign's offer deadline; None sends this one then too.
    deadline_passed: TemplateSource | None = None

    def for_send(self, variables: dict) -> TemplateSource:
        """The variant these variables call for: ``deadline_passed`` once the deadline is behind the send date."""
        if self.deadline_passed is not None and variables.get("deadline_passed") is True:
            return self.deadline_passed
        return self


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


def _environment(autoescape: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=autoescape, undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    env.tests["known"] = is_known
    # Templates written as "{% if assessment_score is not none %}" keep working: unknown is none.
    env.tests["none"] = lambda value: not is_known(value)
    return env


_html_env = _environment(autoescape=True)
_text_env = _environment(autoescape=False)
_LEFTOVER = re.compile(r"\{\{|\}\}|\{%|%\}")


def _env(part: str) -> SandboxedEnvironment:
    return _html_env if part == "html" else _text_env


# A process parses and compiles each template source once: the contract check renders every template
# with all its samples before the first send, and every send renders again.
@functools.lru_cache(maxsize=512)
def _parsed(part: str, source: str) -> jinja2.nodes.Template:
    return _env(part).parse(source)


@functools.lru_cache(maxsize=512)
def _compiled(part: str, source: str) -> jinja2.Template:
    return _env(part).from_string(_parsed(part, source))


def _label(template: TemplateSource, base: TemplateSource) -> str:
    return f"template {base.name!r}" + (f" ({DEADLINE_PASSED} variant)" if template is not base else "")


def _variants(template: TemplateSource) -> list[TemplateSource]:
    return [template] + ([template.deadline_passed] if template.deadline_passed is not None else [])


def _static_problems(template: TemplateSource) -> list[str]:
    """Empty parts, syntax errors and variables outside the contract, in the template and its variant."""
    problems = []
    for variant in _variants(template):
        label = _label(variant, template)
        for part in PARTS:
            source = getattr(variant, part) or ""
            if not source.strip():
                problems.append(f"{label}: {part} is empty")
                continue
            try:
                parsed = _parsed(part, source)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(f"{label}: {part} line {exc.lineno}: {exc.message}")
                continue
            for variable in sorted(meta.find_undeclared_variables(parsed) - PROVIDED_VARIABLES):
                problems.append(f"{label}: {part} uses undefined variable {{{{ {variable} }}}}")
    return problems


def _render_parts(template: TemplateSource, variables: dict) -> Rendered:
    """Render the variant the variables call for; raises TemplateError naming the part and the reason."""
    chosen = template.for_send(variables)
    label = _label(chosen, template)
    out = {}
    for part in PARTS:
        try:
            value = _compiled(part, getattr(chosen, part)).render(**variables)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{label}: {part}: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{label}: {part}: {exc}") from exc
        if _LEFTOVER.search(value):
            raise TemplateError(f"{label}: {part} still contains template markup after rendering")
        if not value.strip():
            raise TemplateError(f"{label}: {part} rendered empty")
        out[part] = value.strip()
    # A subject is one header line: newlines from a name or a template must not reach the header.
    out["subject"] = " ".join(out["subject"].split())
    # Branches leave blank lines behind in plain text: one empty line between paragraphs is enough.
    out["text"] = re.sub(r"\n{3,}", "\n\n", "\n".join(line.rstrip() for line in out["text"].splitlines()))
    return Rendered(**out)


@functools.lru_cache(maxsize=128)
def _contract_problems(template: TemplateSource) -> tuple[str, ...]:
    problems = _static_problems(template)
    if problems:
        return tuple(problems)
    failures: dict[str, list[str]] = {}  # one line per problem, naming the first sample it showed in
    for label, variables in contract_samples():
        try:
            _render_parts(template, variables)
        except TemplateError as exc:
            failures.setdefault(str(exc), []).append(label)
    for message, labels in failures.items():
        more = f"; and {len(labels) - 1} more sample(s)" if len(labels) > 1 else ""
        problems.append(f"{message} (rendering a {labels[0]}{more})")
    return tuple(problems)


def check_template(template: TemplateSource | None, name: str = "") -> list[str]:
    """Every reason this template cannot be sent; [] when it honours the contract.

    Besides the static checks, every template (and its ``deadline_passed`` variant) is rendered with
    the sample signups of ``variables.contract_samples``: a minimal one, full ones, a partial one.
    """
    if template is None:
        return [f"template {name!r} does not exist"]
    return list(_contract_problems(template))


def source_hash(template: TemplateSource) -> str:
    """Which version of a template a message came from: 12 hex of sha256 over its parts (and its deadline variant's).

    The variant is hashed along with the main copy so that editing either one gives a new hash.
    """
    digest = hashlib.sha256()
    for variant in (template, template.deadline_passed):
        for part in ((variant.subject, variant.html, variant.text) if variant is not None else ("",)):
            data = (part or "").encode()
            digest.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: no two splits hash alike
    return digest.hexdigest()[:12]


def render(template: TemplateSource, variables: dict) -> Rendered:
    """Render all three parts or raise TemplateError; never returns an empty, half-filled or invented message."""
    problems = check_template(template)
    if problems:
        raise TemplateError("; ".join(problems))
    return _render_parts(template, variables)


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
