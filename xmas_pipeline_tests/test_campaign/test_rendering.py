import datetime as dt

import pytest

from xmas_pipeline.campaign.loader import load_campaign, load_file_templates
from xmas_pipeline.campaign.rendering import PROVIDED_VARIABLES, TemplateError, TemplateSource, check_template, render
from xmas_pipeline.campaign.variables import build_variables, is_known
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
    assert not is_known(v["revenue_leak"])
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
    t = TemplateSource("e", "Hi {{ first_name|default('there') }}", "<p>Hi {{ first_name|default('there') }}</p>", "Hi {{ first_name|default('there') }}")
    out = render(t, variables(campaign, first_name="<script>x</script>"))
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert out.text == "Hi <script>x</script>"


def test_newlines_cannot_reach_the_subject_line(campaign):
    t = TemplateSource("e", "Hi {{ first_name|default('there') }}", "<p>x</p>", "x")
    out = render(t, variables(campaign, first_name="Ann\r\nBcc: victim@example.com"))
    assert "\r" not in out.subject and "\n" not in out.subject


def test_missing_template_is_named():
    assert check_template(None, "email_9") == ["template 'email_9' does not exist"]


# --- the contract renders every template with a minimal and full signups --------------------------


def test_a_template_that_prints_what_a_minimal_signup_lacks_is_refused_by_name():
    # What the shipped email 1 used to say to everyone, weakest systems or not.
    old = TemplateSource("email_1", "Hi {{ first_name|default('there') }}", "<p>Your two weakest systems are {{ weakest_system_1 }} and {{ weakest_system_2 }}.</p>", "x")
    [problem] = check_template(old, "email_1")
    assert problem.startswith("template 'email_1': html: weakest_system_1 is unknown for this lead")
    assert "{% if weakest_system_1 is known %}" in problem and "minimal signup (email and first name only)" in problem
    with pytest.raises(TemplateError, match="weakest_system_1 is unknown"):
        render(old, variables(load_campaign(DEFAULT_CAMPAIGN_FILE), weakest_system_1="CREW", weakest_system_2="FUEL"))


def test_branching_on_known_passes_the_contract_and_renders_both_ways(campaign):
    t = TemplateSource(
        "e", "Hi {{ first_name|default('there') }}",
        "<p>{% if weakest_system_1 is known %}Start with {{ weakest_system_1 }}.{% else %}Start anywhere.{% endif %}</p>",
        "{% if assessment_score is not none %}Score {{ assessment_score }}{% else %}No score{% endif %}",
    )
    assert check_template(t) == []
    assert render(t, variables(campaign)).html == "<p>Start anywhere.</p>"
    assert render(t, variables(campaign, weakest_system_1="CREW", assessment_score=48)).text == "Score 48"


def test_a_countdown_without_a_deadline_passed_branch_is_refused():
    t = TemplateSource("e", "Hi", "<p>Only {{ days_to_deadline }} days left</p>", "x")
    [problem] = check_template(t)
    assert "days_to_deadline is unknown" in problem and "after the deadline" in problem


def test_the_deadline_passed_variant_is_read_from_files_and_chosen_by_send_date(tmp_path, campaign):
    folder = tmp_path / "templates" / "email_1"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Offer open, {{ days_to_deadline }} days left")
    (folder / "body.html").write_text("<p>Book by {{ deadline_date }}</p>")
    (folder / "body.txt").write_text("Book by {{ deadline_date }}")
    (folder / "subject.deadline_passed.txt").write_text("The offer closed on {{ deadline_date }}")
    (folder / "body.deadline_passed.txt").write_text("Closed. Reply if you want to talk.")
    one_step = campaign.model_copy(update={"steps": campaign.steps[:1]})
    [template] = load_file_templates(one_step, tmp_path / "campaign.yaml").values()
    assert check_template(template) == []

    def at(day):
        return build_variables(profile={"first_name": "Ann"}, segment="OPTIMIZE", campaign=campaign, step=1,
                               now=dt.datetime.combine(day, dt.time(10), campaign.tz), unsubscribe_url="https://i.example.com/u/x")

    before = render(template, at(dt.date(2026, 12, 10)))
    assert before.subject == "Offer open, 8 days left" and before.text == "Book by Friday, December 18"
    after = render(template, at(dt.date(2026, 12, 20)))
    assert after.subject == "The offer closed on Friday, December 18" and after.text == "Closed. Reply if you want to talk."
    assert after.html == "<p>Book by Friday, December 18</p>"  # no body.deadline_passed.html: the main part


def test_problems_in_a_variant_are_named_as_the_variant():
    broken = TemplateSource("e", "Hi", "<p>Hi</p>", "Hi", deadline_passed=TemplateSource("e", "Closed", "<p>{{ nope }}</p>", "Closed"))
    assert check_template(broken) == ["template 'e' (deadline_passed variant): html uses undefined variable {{ nope }}"]


def test_plain_text_keeps_one_empty_line_between_paragraphs(campaign):
    t = TemplateSource("e", "Hi", "<p>x</p>", "A\n{% if revenue_leak is known %}\n\nB\n{% endif %}\n\nC")
    assert render(t, variables(campaign)).text == "A\n\nC"
    assert render(t, variables(campaign, revenue_leak_total=5)).text == "A\n\nB\n\nC"
