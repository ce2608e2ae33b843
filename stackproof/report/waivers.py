"""Waivers: a known failure accepted until a date, with a justification and an owner (as InSpec's).

A waiver file (`--waivers PATH`; by default `waivers.yml` at the stack dir's root, beside its
`stackproof.yml`) lists them:

    waivers:
      - check: suites/test_connection_pool.py::test_pool_size   # a node id, or its check id: test_pool_size
        justification: the pool grows with the new database host (CHG-1234)
        owner: dba-team
        expires: 2026-12-31                                     # the day it stops applying (UTC)
      - control: circuit_breakers                               # every failing check of the control
        justification: ...
        owner: ...
        expires: 2026-12-15

A check waiver names a node id as the report writes it (`suites/test_<control>.py::test_x[param]`)
or the check id after `::`, each with or without its parameter part (without: every parameter).
A control waiver names a control id. Only failures are waived: a skipped check, a NOT PROVEN
control or an environment error is never waived. A waived failure is WAIVED in the report, an xfail
for pytest and JUnit, and does not block GO; from its `expires` date on, the waiver no longer
applies and the check fails with "waiver expired on <date>: <reason>". A waiver that matches no
check of the run is listed as unmatched and warned about.

The file is validated with a pydantic model (unknown keys refused, a date must be a YAML date) and
read with the bounded YAML loader; a malformed or missing file is one line naming the entry and key, and a
usage error (the run does not start), never ignored. The stack is untrusted: under `--strict-profile` (which keeps
the bar out of the stack's hands) a waiver file inside the stack dir is refused, a session error;
an operator's file from outside the stack dir still applies.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from stackproof.controls import BY_ID
from stackproof.errors import StackError
from stackproof.target.profile import inside
from stackproof.io.yamlio import load_yaml

WAIVER_FILE = "waivers.yml"
MAX_WAIVERS = 1000
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
APPLIED, EXPIRED, UNUSED, UNMATCHED = "applied", "expired", "unused", "unmatched"


def check_id(nodeid: str) -> str:
    """A check's id: its node id without the suite file (`test_pool_size[param]`)."""
    return nodeid.partition("::")[2] or nodeid


def check_names(nodeid: str) -> set[str]:
    """Every name a check waiver may use for this check: node id or check id, with or without parameters."""
    path, _, name = nodeid.partition("::")
    base = name.split("[", 1)[0]
    return {nodeid, name, f"{path}::{base}", base}


class Waiver(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    check: Text | None = None
    control: Text | None = None
    justification: Text
    owner: Text
    expires: dt.date

    @model_validator(mode="after")
    def _names_one_subject(self) -> "Waiver":
        if (self.check is None) == (self.control is None):
            raise ValueError("a waiver names exactly one of check: or control:")
        if self.control is not None and self.control not in BY_ID:
            raise ValueError(f"unknown control {self.control!r} (one of: {', '.join(BY_ID)})")
        return self

    @property
    def subject(self) -> str:
        return f"check {self.check}" if self.check is not None else f"control {self.control}"

    def matches(self, nodeid: str, control: str) -> bool:
        return control == self.control if self.control is not None else self.check in check_names(nodeid)

    def expired(self, today: dt.date) -> bool:
        """From its `expires` date on, a waiver no longer applies."""
        return today >= self.expires

    def describe(self) -> str:
        return f"{self.justification} (owner: {self.owner}, expires {self.expires.isoformat()})"

    def as_dict(self, today: dt.date) -> dict:
        return {"check": self.check, "control": self.control, "justification": self.justification,
                "owner": self.owner, "expires": self.expires.isoformat(), "expired": self.expired(today)}


class _WaiverFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    waivers: list[Waiver] = Field(max_length=MAX_WAIVERS)


def _problem(exc: ValidationError, source: str) -> str:
    """The first validation error, in one line naming the entry and key."""
    errors = exc.errors(include_url=False)
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a misspelt key says most
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"].startswith("date"):
        message += " (YYYY-MM-DD, unquoted)"
    value = repr(error.get("input"))
    got = f", got {type(error.get('input')).__name__} {value[:40]}" if error["type"] not in (
        "value_error", "missing", "extra_forbidden") else ""
    return f"{source}: {where or 'the file'}: {message}{got}"


@dataclass
class WaiverSet:
    """The run's waivers, and what each did: the failures it waived, or those it could not (expired)."""

    file: str | None = None  # as the report shows it
    source: str = ""  # "stack" (inside the stack dir) or "operator"
    waivers: tuple[Waiver, ...] = ()
    today: dt.date = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).date())
    error: str = ""
    refused: bool = False  # the error is the stack lowering its own bar (a session error), not a mistake (usage)
    waived: dict[str, Waiver] = field(default_factory=dict)  # node id -> the waiver that waived its failure
    expired: dict[str, Waiver] = field(default_factory=dict)  # node id -> the expired waiver of its failure

    def find(self, nodeid: str, control: str) -> Waiver | None:
        """The waiver of a check: one naming the check first, else one naming its control."""
        matching = [w for w in self.waivers if w.matches(nodeid, control)]
        return next((w for w in matching if w.check is not None), matching[0] if matching else None)

    def judge_failure(self, nodeid: str, control: str) -> Waiver | None:
        """A check failed: the waiver that waives it (None: it stays a failure, maybe with an expired waiver)."""
        waiver = self.find(nodeid, control)
        if waiver is None:
            return None
        if waiver.expired(self.today):
            self.expired[nodeid] = waiver
            return None
        self.waived[nodeid] = waiver
        return waiver

    def summary(self, rows: list[dict]) -> dict:
        """The report's waivers section: each waiver with its state and the checks it matched."""
        entries = []
        for waiver in self.waivers:
            matched = [row["nodeid"] for row in rows if waiver.matches(row["nodeid"], row["control"])]
            if not matched:
                state = UNMATCHED
            elif waiver.expired(self.today):
                state = EXPIRED
            elif any(self.waived.get(nodeid) is waiver for nodeid in matched):
                state = APPLIED
            else:
                state = UNUSED
            entries.append({**waiver.as_dict(self.today), "state": state, "checks": matched})
        return {"file": self.file, "source": self.source, "error": self.error, "entries": entries,
                "waived": len(self.waived)}


def load_waivers(stack_root: Path, given: str, strict: bool, today: dt.date) -> WaiverSet:
    """The waivers of the run: from `given` (--waivers) or the stack dir's waivers.yml, if present.
    A problem (malformed file, a missing --waivers file, a file inside the stack dir under --strict-profile)
    comes back as the set's `error`, one line. A file refused as the stack's own (`refused`: inside the stack dir
    under --strict-profile, or leading out of it) is a session error, NO-GO; a file that cannot be used (missing,
    malformed) is a usage error: the run does not start."""
    if given:  # the operator's choice; it is the stack's own file when it lies in the stack dir (links followed)
        path = Path(given).expanduser().absolute()
        in_stack = inside(path, stack_root)
        shown = str(path.resolve().relative_to(stack_root.resolve())) if in_stack else str(path)
    else:  # the stack's own file, wherever a link in it points
        path, in_stack, shown = stack_root / WAIVER_FILE, True, WAIVER_FILE
        if not path.exists() and not path.is_symlink():
            return WaiverSet(today=today)
    waivers = WaiverSet(file=shown, source="stack" if in_stack else "operator", today=today)
    if strict and in_stack:
        waivers.refused = True
        waivers.error = (f"waiver file {shown} is inside the stack dir: refused under --strict-profile (the stack "
                         "cannot waive its own checks; give the operator's waivers with --waivers PATH outside it)")
        return waivers
    if not given and not inside(path, stack_root):
        waivers.refused = True
        waivers.error = f"waiver file {shown}: leads out of the stack dir"
        return waivers
    try:
        data = load_yaml(path, f"waiver file {shown}")
        if data is None:
            data = {"waivers": []}
        if not isinstance(data, dict):
            raise StackError(f"waiver file {shown}: must be a mapping with a list 'waivers'")
        try:
            waivers.waivers = tuple(_WaiverFile.model_validate(data).waivers)
        except ValidationError as exc:
            raise StackError(_problem(exc, f"waiver file {shown}")) from None
    except StackError as exc:
        waivers.error = str(exc)
    return waivers
