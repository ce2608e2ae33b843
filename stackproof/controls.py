"""The controls of the validation report, one suite file each, and what a check says to do when it fails.

Each check carries its remediation as data on the check itself: `@pytest.mark.remediation(severity, fix)`
(one definition, read by `remedy_of`), and each control has a page, `docs/controls/<control>.md`, with a
section per check (its function name is the anchor) saying why it matters, how it fails and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

from stackproof import bundle


class Severity(StrEnum):
    """How bad a failing check is: critical (a secret or the API exposed, or the API down for every client),
    high (an outage likely, or one nobody is told about), medium (a weaker safeguard, a cost)."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"


@dataclass(frozen=True)
class Remedy:
    """A check's severity and fix text (the `remediation` marker's arguments)."""

    severity: Severity
    fix: str


REMEDIATION_MARKER = "remediation"


def remedy_of(item) -> Remedy | None:
    """The remediation a check declares with `@pytest.mark.remediation(severity, fix)` (None: it declares none;
    tests/test_control_docs.py fails for a check of suites/ without one)."""
    marker = item.get_closest_marker(REMEDIATION_MARKER)
    if marker is None or len(marker.args) != 2:
        return None
    severity, fix = marker.args
    return Remedy(Severity(severity), " ".join(str(fix).split()))


def check_anchor(nodeid: str) -> str:
    """The anchor of a check's section on its control's page: its function name (no parameter part)."""
    return nodeid.partition("::")[2].split("[", 1)[0]


def doc_url(docs_base: str, control: str, nodeid: str | None = None) -> str:
    """A control's page (or a check's section on it) under `docs_base` (a URL ending in /)."""
    return f"{docs_base}{quote(control)}.md" + (f"#{quote(check_anchor(nodeid))}" if nodeid else "")


def default_docs_base() -> str:
    """The controls' pages as shipped with this stackproof (a file: URL), when no --docs-url says where they
    are published."""
    return bundle.control_docs_dir().as_uri() + "/"


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    impact: str
    p0: bool = True
    warning: str = ""
    warning_engines: tuple[str, ...] = ()  # the engines the warning is about (none: every engine)
    proven_statically: bool = True  # False: its static checks cannot prove it (only a live run can): LIVE ONLY

    def warning_for(self, engine: str | None) -> str:
        """The warning as it applies to the run's engine (unknown engine: shown)."""
        return self.warning if not engine or not self.warning_engines or engine in self.warning_engines else ""


CONTROLS: tuple[Control, ...] = (
    Control(
        "api_key_permissions",
        "API key permissions",
        "An API key readable by other users or processes gives away every protected endpoint.",
    ),
    Control(
        "docker_secrets_mode",
        "Docker secrets mode",
        "Services must see the key as 0400, owned by their own user, inside the container.",
        warning=(
            "Non-swarm Compose ignores `mode` on file secrets: it bind-mounts the host file, "
            "so the container sees the host file's mode and owner. Only the live check proves this control."
        ),
        warning_engines=("compose", "podman"),  # swarm applies mode, uid and gid
        proven_statically=False,  # what compose declares is not what the container sees
    ),
    Control(
        "connection_pool",
        "Connection pool",
        "A pool too small for the agents queues or times out requests; one too large exhausts Postgres.",
    ),
    Control(
        "alert_rules",
        "Prometheus alert rules",
        "Rules Prometheus cannot load, or that select no series, never fire.",
    ),
    Control(
        "tls_monitoring",
        "TLS certificate monitoring",
        "An expired certificate takes the API down for every client at once.",
    ),
    Control(
        "progressive_disclosure",
        "Progressive disclosure",
        "Agents that load the full docs spend their token budget before doing any work.",
    ),
    Control(
        "circuit_breakers",
        "Circuit breakers",
        "A breaker that never opens, never closes, exports no state or alerts nobody turns one slow "
        "dependency into an outage for every agent.",
    ),
)

BY_ID: dict[str, Control] = {c.id: c for c in CONTROLS}
