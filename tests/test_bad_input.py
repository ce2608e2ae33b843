"""Bad input anywhere fails the right controls with one line naming the file or
container; nothing crashes and the report is always written. (A stack dir, profile or waiver
file that cannot be used is a usage error instead: tests/test_usage_errors.py.)"""

from __future__ import annotations

import shutil

import pytest
from harness import SuiteRun

COMPOSE = "ai-stack/compose/docker-compose.yml"
YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


def _explained(run: SuiteRun, *fragments: str) -> list[str]:
    """Every failure reason is one line; at least one names each fragment. Returns the reasons."""
    assert run.report is not None, f"no report written:\n{run.stdout[-3000:]}"
    assert "INTERNALERROR" not in run.stdout and "Traceback" not in run.stdout.split("= FAILURES =")[0]
    reasons = [r for c in run.failed_controls for r in run.reasons(c)] + run.report["target_errors"]
    assert reasons, "nothing failed"
    for reason in reasons:
        assert reason and "\n" not in reason
    for fragment in fragments:
        assert any(fragment in r for r in reasons), f"{fragment!r} in none of {reasons}"
    assert run.failed_gate and run.ret == 1
    return reasons


def _append(path, text):
    with path.open("a") as handle:
        handle.write(text)


# (id, how to break the copy, fragments some reason must hold, controls that must still pass)
CASES = [
    ("compose-malformed", lambda s: _append(s / COMPOSE, "\n  : [unclosed\n"), ["docker-compose.yml", "invalid YAML"],
     ["progressive_disclosure"]),
    ("compose-empty", lambda s: (s / COMPOSE).write_text(""), ["docker-compose.yml", "not a compose file"],
     ["progressive_disclosure"]),
    ("compose-huge", lambda s: (s / COMPOSE).write_text("x: " + "y" * (5 * 1024 * 1024)), ["docker-compose.yml", "limit"],
     ["progressive_disclosure"]),
    ("compose-yaml-bomb", lambda s: (s / COMPOSE).write_text(YAML_BOMB), ["docker-compose.yml", "YAML bomb"],
     ["progressive_disclosure"]),
    ("compose-duplicate-key", lambda s: _append(s / COMPOSE, "\nvolumes:\n  other:\n"), ["docker-compose.yml", "duplicate key 'volumes'"],
     ["progressive_disclosure"]),
    ("compose-unknown-key", lambda s: _append(s / COMPOSE, "\nservice_typo:\n  a: 1\n"), ["docker-compose.yml", "service_typo"],
     ["progressive_disclosure"]),
    ("secrets-dir-missing", lambda s: shutil.rmtree(s / "ai-stack/compose/secrets"), ["secrets"],
     ["alert_rules", "tls_monitoring", "progressive_disclosure"]),
    ("compose-10000-levels", lambda s: (s / COMPOSE).write_text("services: " + "[" * 10_000 + "]" * 10_000),
     ["docker-compose.yml: line 1 invalid YAML: nested deeper than 100 levels"], ["progressive_disclosure"]),
]


@pytest.mark.parametrize("break_it, fragments, still_pass", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_file_fails_with_one_line(stack_copy, run_static, break_it, fragments, still_pass):
    break_it(stack_copy)
    run = run_static(stack_copy)
    _explained(run, *fragments)
    for control in still_pass:
        assert run.statuses[control] == "PASS", (control, run.reasons(control))


@pytest.mark.parametrize("env, args, fragment", [
    ({"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, [], "Docker engine unreachable"),
    pytest.param({}, ["--compose-project", "no-such-project"], "compose project 'no-such-project' has no running containers",
                 marks=pytest.mark.engine),  # the engine answers, the project is not there
], ids=["docker-socket-refused", "compose-project-not-found"])
def test_live_without_a_stack_fails_with_live_and_skips_without(stack_copy, run_suite, monkeypatch, env, args, fragment):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    strict = run_suite(stack_copy, "-m", "live", "--live", *args)
    _explained(strict, fragment)
    lenient = run_suite(stack_copy, "-m", "live", *args)
    assert lenient.report is not None and lenient.ret == 1, "a NO-GO of skipped checks exits non-zero"
    assert set(lenient.statuses.values()) == {"NOT PROVEN"}, "a skip never counts as a pass"
    assert lenient.failed_gate and fragment in lenient.report["verdict"]["reason"]


def test_missing_required_variables_are_one_target_error(stack_copy, run_static):
    """Without the compose .env, every ${STACK_UID:?} is unset: one target error at the top of the
    report and terminal, the checks that need the compose model blocked by it, not 20 failures."""
    (stack_copy / "ai-stack/compose/.env").unlink()
    run = run_static(stack_copy)
    assert run.report is not None, run.stdout[-3000:]
    [error] = run.report["target_errors"]
    assert "STACK_UID" in error and "STACK_GID" in error and "docker-compose.yml" in error
    rows = [row for c in run.report["controls"] for row in c["checks"]]
    assert not [row for row in rows if "STACK_UID" in row["reason"] and row["status"] == "FAIL"]
    blocked = [row for row in rows if row["status"] == "SKIPPED" and row["reason"].startswith("blocked by the compose model: ")]
    assert len(blocked) >= 10
    assert run.failed_gate and "target error" in run.report["verdict"]["reason"] and run.ret == 1
    assert run.stdout.count("TARGET ERROR: ") == 1
    assert run.statuses["progressive_disclosure"] == "PASS"  # checks that do not need the compose model still judge
    assert "tls_monitoring" not in run.failed_controls  # its served-names check needs the TLS terminator: blocked


def test_role_behind_an_inactive_compose_profile_is_named(stack_copy, run_static):
    """Prometheus only under compose profile 'full': the failure says so and how to activate it;
    activating it in the profile makes the stack GO."""
    compose = stack_copy / "ai-stack/compose/docker-compose.yml"
    text = compose.read_text()
    for service in ("prometheus", "alertmanager"):
        marker = f"\n  {service}:\n    <<: *hardening\n"
        assert marker in text
        text = text.replace(marker, f"{marker}    profiles: [full]\n")
    compose.write_text(text)
    run = run_static(stack_copy)
    assert run.failed_controls == {"alert_rules"}, run.statuses
    reasons = run.reasons("alert_rules")
    assert any("Prometheus (prometheus) is in compose profile 'full', which is not active" in r for r in reasons)
    assert any("the Alertmanager (alertmanager) is in compose profile 'full'" in r for r in reasons)
    assert all("which is not active" in r and "COMPOSE_PROFILES=full" in r for r in reasons), reasons
    with (stack_copy / "stackproof.yml").open("a") as profile:
        profile.write("\ncompose:\n  profiles: [full]\n")
    again = run_static(stack_copy)
    assert again.passed, again.statuses
