"""The controls of the validation report, one suite file each."""

from __future__ import annotations

from dataclasses import dataclass


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
