"""The evidence a check records: what was checked, what it found, what was expected."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest


@dataclass
class Evidence:
    """Filled in by a check through the `evidence` fixture; becomes one report row.

    Values must never hold a secret: use `stack.redactor.fingerprint()` for those.
    """

    test: str = ""
    expected: str = ""
    result: str = ""
    notes: list[str] = field(default_factory=list)

    def record(self, *, test: str | None = None, expected: str | None = None, result: str | None = None) -> None:
        if test is not None:
            self.test = test
        if expected is not None:
            self.expected = expected
        if result is not None:
            self.result = result

    def note(self, text: str) -> None:
        self.notes.append(text)


EVIDENCE_KEY = pytest.StashKey[Evidence]()
