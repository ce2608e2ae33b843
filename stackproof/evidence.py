"""The evidence a check records: what was checked, what it found, what was expected."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pytest


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

    def locate(self, *locations: Location) -> None:
        """Where the finding is (each once, in the order given): the file, line and key a fix goes to."""
        self.locations.extend(place for place in locations if place not in self.locations)


EVIDENCE_KEY = pytest.StashKey[Evidence]()
