import datetime as dt

import pytest

from xmas_pipeline.campaign.loader import load_campaign, load_file_templates
from xmas_pipeline.campaign.rendering import PROVIDED_VARIABLES, TemplateError, TemplateSource, check_template, render
from xmas_pipeline.campaign.variables import build_variables
from xmas_pipeline.settings import DEFAULT_CAMPAIGN_FILE

NOW = dt.datetime(2026, 12, 1, 9, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def campaign():
    return load_campaign(DEFAULT_CAMPAIGN_FILE)


def variables(campaign, **profile):
    return build_variables(
        profile={"first_name": "Ann", **profile}, segment="CRITICAL", campaign=campaign, step=1, now=NOW,
        unsubscribe_url="https://intake.example.com/u/abc",
    )


def test_variables_are_exactly_the_contract(campaign):
    assert set(variables(campaign)) == PROVIDED_VARIABLES


def test_every_shipped_template_honours_the_contract_and_renders(campaign):
    templates = load_file_templates(campaign, DEFAULT_CAMPAIGN_FILE)
    assert len(templates) == 7
    for step in campaign.steps:
        assert check_template(templates[step.template], step.template) == []
        rendered = render(templates[step.template], variables(campaign, revenue_leak_total=4200))
        assert rendered.subject and rendered.html and rendered.text
        assert "{{" not in rendered.html + rendered.text + rendered.subject


def test_deadline_countdown_comes_from_the_campaign_file(campaign):
    v = variables(campaign)
    assert v["days_to_deadline"] == (campaign.deadline - dt.date(2026, 12, 1)).days
    assert v["deadline_date"] == "Friday, December 18"
    assert v["revenue_leak"] is None
    assert variables(campaign, revenue_leak_total=12400.4)["revenue_leak"] == "$12,400"


def test_undefined_variable_is_refused_before_rendering():
    bad = TemplateSource("e", "Hi {{ first_name }}", "<p>{{ FirstName }}</p>", "Hi {{ first_name }}")
    problems = check_template(bad)
    assert problems == ["template 'e': html uses undefined variable {{ FirstName }}"]
    with pytest.raises(TemplateError, match="FirstName"):
        render(bad, {"first_name": "Ann"})


@pytest.mark.parametrize("part", ["subject", "html", "text"])
def test_empty_part_is_refused(part):
    parts = {"subject": "Hi", "html": "<p>Hi</p>", "text": "Hi"}
    parts[part] = "   "
    with pytest.raises(TemplateError, match=f"{part} is empty"):
        render(TemplateSource("e", **parts), {})


def test_html_in_a_name_is_escaped_in_html_but_not_in_text(campaign):
    t = TemplateSource("e", "Hi {{ first_name }}", "<p>Hi {{ first_name }}</p>", "Hi {{ first_name }}")
    out = render(t, variables(campaign, first_name="<script>x</script>"))
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert out.text == "Hi <script>x</script>"


def test_newlines_cannot_reach_the_subject_line(campaign):
    t = TemplateSource("e", "Hi {{ first_name }}", "<p>x</p>", "x")
    out = render(t, variables(campaign, first_name="Ann\r\nBcc: victim@example.com"))
    assert "\r" not in out.subject and "\n" not in out.subject


def test_missing_template_is_named():
    assert check_template(None, "email_9") == ["template 'email_9' does not exist"]
