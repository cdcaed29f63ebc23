"""Email 1 as it lands in the outbox for the README's signup: the lead's own results, nothing invented."""

from __future__ import annotations

import email
import email.policy

from xmas_pipeline_tests.test_delivery.helpers import enroll


def test_the_readme_signup_gets_its_own_results_and_no_invented_ones(settings):
    # The README's curl: no weakest systems, counts that do not add up to 8; a name typed in lower case.
    enroll(settings, "sarah@example.com", first_name="sarah", red_systems=2, orange_systems=1, assessment_score=48)
    [eml] = settings.outbox_dir.glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()
    assert message["Subject"] == "Sarah, your Christmas Readiness results are in"
    assert text.startswith("Hi Sarah,")
    assert "Your overall score is 48, which puts your business in the Crisis Zone." in text
    assert "GPS" not in text and "CREW" not in text  # no weakest systems were sent, none are named
    assert "8 business systems" not in text  # 2 + 1 is not a picture of 8 systems
