"""Comparators: what a check expects, as the report shows it and as the verdict applies it, from one
definition.

A check that writes its expectation three times (the evidence's `expected`, the test, the failure
message) lets them drift apart: a report that says "expected 0700" above a check that accepted 0750.
A comparator holds the expected text and the test together, and `Evidence.expect` records the one and
applies the other, so the row, the verdict and the reason cannot disagree (kube-bench's compare
operators return the expected text and the result the same way).

    evidence.expect(f"mode of {rel}/", f"{rel}: secrets dir mode", mode, equal(0o700, show=octal))
    # expected "0700"; fails with "<rel>: secrets dir mode 0755, expected 0700"
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any


def octal(mode: int | None) -> str:
    """A file mode as `ls -l`'s octal reading shows it (0640); None is a missing file."""
    return "missing" if mode is None else f"{mode:04o}"


@dataclass(frozen=True)
class Comparator:
    """An expectation: `expected` is how the report states it, `accepts` decides a value, `show` writes
    a value the way `expected` writes the bound."""

    expected: str
    accepts: Callable[[Any], bool]
    show: Callable[[Any], str] = str

    def __call__(self, value: Any) -> bool:
        return value is not None and self.accepts(value)

    def failure(self, subject: str, value: Any) -> str | None:
        """None when `value` meets the expectation; else the one-line reason: '<subject> <value>, expected ...'."""
        return None if self(value) else f"{subject} {self.show(value)}, expected {self.expected}"


def equal(wanted: Any, *, show: Callable[[Any], str] = str) -> Comparator:
    return Comparator(show(wanted), lambda value: value == wanted, show)


def one_of(allowed: Collection[Any], *, show: Callable[[Any], str] = str) -> Comparator:
    return Comparator("/".join(show(value) for value in allowed), lambda value: value in allowed, show)


def at_least(bound: Any, *, show: Callable[[Any], str] = str, bound_text: str | None = None) -> Comparator:
    """`bound_text`: the bound as the profile states it, when values are shown more precisely (60% vs 41.3%)."""
    return Comparator(f">= {bound_text or show(bound)}", lambda value: value >= bound, show)


def at_most(bound: Any, *, show: Callable[[Any], str] = str, bound_text: str | None = None) -> Comparator:
    return Comparator(f"<= {bound_text or show(bound)}", lambda value: value <= bound, show)


def more_than(bound: Any, *, show: Callable[[Any], str] = str, bound_text: str | None = None) -> Comparator:
    return Comparator(f"> {bound_text or show(bound)}", lambda value: value > bound, show)


def mode_within(allowed_bits: int) -> Comparator:
    """A file mode with no permission bit beyond `allowed_bits` (0600: 0400 and 0600 pass, 0640 does not)."""
    return Comparator(f"{octal(allowed_bits)} or stricter", lambda mode: mode & ~allowed_bits == 0, octal)
