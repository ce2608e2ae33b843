"""The evidence a check records: what was checked, what it found, what was expected."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from stackproof.compare import Comparator


@dataclass(frozen=True)
class Location:
    """Where a check's finding is in the stack's files: a path relative to the stack dir, the line where it is
    known, and the YAML key path it names (`services.aidb.secrets`). SARIF and the JSON report carry it."""

    path: str
    line: int | None = None
    key: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evidence:
    """Filled in by a check through the `evidence` fixture; becomes one report row.

    Values must never hold a secret: use `stack.redactor.fingerprint()` for those.
    """

    test: str = ""
    expected: str = ""
    result: str = ""
    notes: list[str] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)

    def record(self, *, test: str | None = None, expected: str | None = None, result: str | None = None) -> None:
        if test is not None:
            self.test = test
        if expected is not None:
            self.expected = expected
        if result is not None:
            self.result = result

    def note(self, text: str) -> None:
        self.notes.append(text)

    def expect(self, test: str, subject: str, value: Any, comparator: Comparator, *, result: str | None = None) -> None:
        """Record what was checked and its expectation, and fail unless `value` meets it: the row's
        `expected`, the verdict and the reason all come from `comparator`. `result`: the value as the
        row shows it, when it says more than the value (an owner beside a mode)."""
        self.record(test=test, expected=comparator.expected, result=comparator.show(value) if result is None else result)
        failure = comparator.failure(subject, value)
        if failure:
            raise AssertionError(failure)

    def expect_each(self, test: str, problem: str, values: dict[str, Any], comparator: Comparator, *,
                    nothing: str = "nothing to check") -> None:
        """`expect` over several subjects (each file, each service): the row lists every value, the reason
        every subject that misses, after `problem` ('secret file mode is not 0400/0600: a 0644, b 0640')."""
        shown = {subject: comparator.show(value) for subject, value in values.items()}
        self.record(test=test, expected=comparator.expected, result="; ".join(f"{s} {v}" for s, v in shown.items()) or nothing)
        wrong = [f"{subject} {shown[subject]}" for subject, value in values.items() if not comparator(value)]
        if wrong:
            raise AssertionError(f"{problem}: {', '.join(wrong)}")

    def locate(self, *locations: Location) -> None:
        """Where the finding is (each once, in the order given): the file, line and key a fix goes to."""
        self.locations.extend(place for place in locations if place not in self.locations)


EVIDENCE_KEY = pytest.StashKey[Evidence]()
