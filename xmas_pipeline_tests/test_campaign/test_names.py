"""First names are greeted as people write them: only all-lower or all-upper input is re-cased."""

import pytest

from xmas_pipeline.campaign.names import display_first_name


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("ann", "Ann"),
        ("ANN", "Ann"),
        ("  sarah  ", "Sarah"),
        ("mary-jane", "Mary-Jane"),
        ("JEAN-LUC", "Jean-Luc"),
        ("o'neil", "O'Neil"),
        ("ann marie", "Ann Marie"),
        ("de la cruz", "De La Cruz"),  # all lower-case: we cannot know better, so title case
        ("élodie", "Élodie"),
        ("McDonald", "McDonald"),  # mixed case is the person's own: kept
        ("de la Cruz", "de la Cruz"),
        ("DeShawn", "DeShawn"),
        ("Ann", "Ann"),
        ("李", "李"),  # no letter case at all: kept
    ],
)
def test_names_are_recased_only_when_they_arrive_in_one_case(raw, shown):
    assert display_first_name(raw) == shown


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_no_name_is_no_name(raw):
    assert display_first_name(raw) is None
