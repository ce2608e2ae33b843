"""The one exception the suite raises for a problem in the stack under test, and the one way a check
says that the environment it runs in lacks a tool."""

from __future__ import annotations

from typing import NoReturn

import pytest


class StackError(Exception):
    """A file or container of the stack is missing, unreadable or malformed.

    The message is one line and names the file or container; a check that hits it
    fails its control with that line as the reason.
    """


class RequiredVariablesMissing(StackError):
    """Compose variables marked required (${X:?msg}) have no value: the compose model cannot be
    read at all. A target error, reported once, not one failure per check."""

    def __init__(self, where: str, variables: dict[str, str]):
        self.where = where
        self.variables = dict(variables)
        listed = ", ".join(f"{name} ({reason})" for name, reason in self.variables.items())
        super().__init__(f"{where}: required variable(s) without a value: {listed} "
                         "(set them in an --env-file, or pass them from the environment with --env NAME)")


class Blocked(StackError):
    """An input that an earlier check already found broken: the check asking for it is SKIPPED
    'blocked by <check>: <reason>' instead of failing again on the same root cause."""


ENVIRONMENT_ERROR = "environment error: "


def environment_error(message: str) -> NoReturn:
    """Skip a check because a tool it needs is missing where the suite runs. That is an error of the
    environment, not a fact about the stack: the report names it as such and the verdict is NO-GO."""
    pytest.skip(ENVIRONMENT_ERROR + message)
