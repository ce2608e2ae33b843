"""--engine without a running stack: the secret-mode warning follows the engine, a wrong engine name
is a usage error (the engines themselves are tested live in test_engines_live.py)."""

from __future__ import annotations

from pathlib import Path


def _warning(run) -> str:
    return next(c["warning"] for c in run.report["controls"] if c["id"] == "docker_secrets_mode")


def test_secret_mode_warning_only_where_the_engine_ignores_mode(reference_stack: Path, run_static):
    """Non-swarm Compose and Podman bind-mount the host file (the declared mode is not applied): the
    report warns; swarm applies the mode: no warning. The run records the engine."""
    for engine, warned in (("compose", True), ("podman", True), ("swarm", False)):
        run = run_static(reference_stack, "--engine", engine, "-k", "secret_references_declare_mode")
        assert run.report is not None and run.statuses["docker_secrets_mode"] == "LIVE ONLY", run.stdout[-2000:]
        assert run.ret == 1  # the other controls, not run, are NOT PROVEN: NO-GO
        assert run.report["run"]["engine"] == engine
        assert bool(_warning(run)) is warned, (engine, _warning(run))
        assert ("ignores `mode`" in _warning(run)) is warned


def test_unknown_engine_is_a_usage_error(reference_stack: Path, run_static):
    run = run_static(reference_stack, "--engine", "kubernetes")
    assert run.ret == 4
    assert "--engine 'kubernetes': one of compose, swarm, podman" in run.stderr + run.stdout
