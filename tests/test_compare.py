"""Comparators: the expected text and the verdict from one definition, and Evidence.expect applying both."""

import pytest

from stackproof.compare import at_least, at_most, equal, mode_within, more_than, octal, one_of
from stackproof.evidence import Evidence

# (comparator, its expected text, values it accepts, values it refuses)
CASES = [
    (equal(0o700, show=octal), "0700", [0o700], [0o755, 0o600, None]),
    (one_of([0o400, 0o600], show=octal), "0400/0600", [0o400, 0o600], [0o440, 0o644, None]),
    (mode_within(0o600), "0600 or stricter", [0o600, 0o400, 0o000], [0o640, 0o644, 0o700, None]),
    (at_least(10), ">= 10", [10, 11], [9, None]),
    (at_most(20), "<= 20", [0, 20], [21, None]),
    (at_least(0.6, show="{:.1%}".format, bound_text="60%"), ">= 60%", [0.6, 0.95], [0.599]),
    (more_than(30, show="{} days left".format, bound_text="30 days"), "> 30 days", [31, 365], [30, -2, None]),
]


@pytest.mark.parametrize("comparator, expected, accepted, refused", CASES, ids=[c[1] for c in CASES])
def test_comparator_states_and_applies_one_expectation(comparator, expected, accepted, refused):
    assert comparator.expected == expected
    assert all(comparator(value) for value in accepted)
    assert not any(comparator(value) for value in refused)
    assert comparator.failure("x", accepted[0]) is None
    assert comparator.failure("x", refused[0]) == f"x {comparator.show(refused[0])}, expected {expected}"


def test_expect_records_the_row_and_fails_with_the_same_expectation():
    evidence = Evidence()
    evidence.expect("mode of secrets/", "secrets: secrets dir mode", 0o700, equal(0o700, show=octal))
    assert (evidence.expected, evidence.result) == ("0700", "0700")
    with pytest.raises(AssertionError, match=r"^secrets: secrets dir mode 0755, expected 0700$"):
        evidence.expect("mode of secrets/", "secrets: secrets dir mode", 0o755, equal(0o700, show=octal))
    assert (evidence.expected, evidence.result) == ("0700", "0755")


def test_expect_each_lists_every_value_and_names_every_miss():
    evidence = Evidence()
    modes = {"a": 0o400, "b": 0o644, "c": None}
    with pytest.raises(AssertionError) as failed:
        evidence.expect_each("modes", "secret file mode is not 0400/0600", modes, one_of([0o400, 0o600], show=octal))
    assert str(failed.value) == "secret file mode is not 0400/0600: b 0644, c missing"
    assert evidence.result == "a 0400; b 0644; c missing" and evidence.expected == "0400/0600"
    empty = Evidence()
    empty.expect_each("modes", "p", {}, one_of([0o400], show=octal), nothing="no file secrets")
    assert empty.result == "no file secrets"
