"""The one exception the suite raises for a problem in the stack under test, and the ways a check says
why it did not run (the `outcome.NotRun` family: blocked, environment error, not applicable, not proven)."""

from __future__ import annotations

from typing import NoReturn

from stackproof.report.outcome import BlockedBy, EnvironmentProblem, NotApplicable, NotProven


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
    """An input that an earlier check (or a root cause, such as the compose model) already found broken,
    raised where it is loaded (`Stack.needs`): the plugin turns it into the check's SKIPPED
    'blocked by <check>: <reason>' (`outcome.BlockedBy`) instead of a second failure on the same root
    cause. A StackError, so the code between the loader and the check handles it like any input error."""

    def __init__(self, by: str, reason: str):
        self.by, self.reason = by, reason
        super().__init__(f"blocked by {by}: {reason}")


def blocked(by: str, reason: str) -> NoReturn:
    """Skip a check whose input an earlier failing check (`by`) already ruled out: shown BLOCKED, its
    control not proven by it."""
    raise BlockedBy(by, reason)


class NotDeclared(StackError):
    """An input this stack's profile does not name and the suite cannot find without guessing (no
    compose file where Compose looks, no TLS monitor script...). The checks that need it are NOT PROVEN,
    saying what the stack lacks and where the suite looked: never judged against another stack's layout."""


class InputUnreadable(StackError):
    """An input every control depends on (the compose model) cannot be read: the one root cause of the
    run, reported once at the top; each check that needs it is SKIPPED 'blocked by the compose model'."""


NOT_PROVEN_PREFIX = "not proven: "


def environment_error(message: str) -> NoReturn:
    """Skip a check because a tool it needs is missing where the suite runs. That is an error of the
    environment, not a fact about the stack: the report names it as such and the verdict is NO-GO."""
    raise EnvironmentProblem(message)


def not_applicable(reason: str) -> NoReturn:
    """Skip a check that has nothing to judge in this stack (it does not keep its control from passing)."""
    raise NotApplicable(reason)


def not_proven(reason: str) -> NoReturn:
    """Skip a check that could not see what it must judge: its control is not proven, the verdict NO-GO."""
    raise NotProven(reason)
