"""A usage mistake is not a verdict: a wrong option, stack dir, profile, waiver file or baseline is
found before any check runs, every one at once, one line each on stderr, without a traceback and
without a report; `stackproof` exits 2 (pytest itself 4), never 1 (NO-GO)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, merge_into_profile

from stackproof import cli
from stackproof.options import OPTIONS


def stackproof(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command, in a child process (as a user runs it)."""
    return subprocess.run([sys.executable, "-m", "stackproof.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def assert_usage_error(done: subprocess.CompletedProcess, report_dir: Path, *lines: str) -> None:
    """Exit 2, each expected fragment on its own stderr line, no traceback, no report, no checks run."""
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    problems = [line for line in done.stderr.splitlines() if line.strip()]
    for fragment in lines:
        assert any(fragment in line for line in problems), f"{fragment!r} not on any line of:\n{done.stderr}"
    assert len(problems) == len(lines), done.stderr
    assert "Traceback" not in done.stdout + done.stderr and "passed" not in done.stdout
    assert not report_dir.exists() or not any(report_dir.iterdir()), "a usage error writes no report"


def _profile(text: str):
    return lambda stack, tmp: (stack / "stackproof.yml").open("a").write(text)


# (id, how to get it wrong, extra arguments, the one line per problem)
MISTAKES = [
    ("stack-dir-missing", None, ["--stack-dir", "{tmp}/nowhere"], ["--stack-dir {tmp}/nowhere: no such directory"]),
    ("stack-dir-a-file", lambda s, t: (t / "file").write_text("x"), ["--stack-dir", "{tmp}/file"],
     ["--stack-dir {tmp}/file: not a directory"]),
    ("no-compose-file", lambda s, t: (s / "ai-stack/compose/docker-compose.yml").unlink(), [],
     ["no compose file at ai-stack/compose/docker-compose.yml, where stackproof.yml says (paths.compose): "
      "run `stackproof init --stack-dir"]),
    ("compose-file-named-missing", lambda s, t: merge_into_profile(s, "paths:\n  compose: deploy/compose.yml\n"), [],
     ["no compose file at deploy/compose.yml, where stackproof.yml says (paths.compose): run `stackproof init"]),
    ("empty-dir", lambda s, t: (t / "empty").mkdir(), ["--stack-dir", "{tmp}/empty"],
     ["{tmp}/empty: no compose file: looked for paths.compose, COMPOSE_FILE in the stack dir's .env, compose.yaml, "
      "compose.yml, docker-compose.yaml, docker-compose.yml at the stack dir's root: run `stackproof init --stack-dir "
      "{tmp}/empty`"]),
    ("profile-two-typos", _profile("\npool:\n  min_sise: 30\ntls:\n  warn_dayz: 3\n"), [],
     ["stackproof.yml: unknown key 'pool.min_sise' (did you mean 'min_size'?",
      "stackproof.yml: unknown key 'tls.warn_dayz' (did you mean 'warn_days'?"]),
    ("profile-types-and-section", _profile("\npool:\n  min_size: '30'\nlive:\n  nginx_port: [443]\nnope: 1\n"), [],
     ["stackproof.yml: pool.min_size must be an integer, got str '30'",
      "stackproof.yml: live.nginx_port must be an integer, got list [443]",
      "stackproof.yml: unknown key 'nope' (known in the profile: "]),
    ("profile-not-yaml", _profile("\npool: [unclosed\n"), [], ["stackproof.yml: line "]),
    ("profile-10000-levels", _profile("\npool: " + "{a: " * 10_000 + "}" * 10_000 + "\n"), [],
     ["invalid YAML: nested deeper than 100 levels"]),
    ("profile-fifo", lambda s, t: ((s / "stackproof.yml").unlink(), os.mkfifo(s / "stackproof.yml")), [],
     ["stackproof.yml: a FIFO, not a regular file"]),
    ("profile-dev-zero", lambda s, t: ((s / "stackproof.yml").unlink(), (s / "stackproof.yml").symlink_to("/dev/zero")),
     [], ["stackproof.yml: "]),
    ("operator-profile-missing-and-stack-typo", _profile("\npool:\n  min_sise: 30\n"),
     ["--profile", "{tmp}/ops.yml"], ["unknown key 'pool.min_sise'", "{tmp}/ops.yml: file not found"]),
    ("operator-profile-inside", lambda s, t: (s / "ops.yml").write_text("pool:\n  min_size: 40\n"),
     ["--profile", "{stack}/ops.yml"], ["(--profile): inside the stack dir, so the stack could write it"]),
    ("waivers-malformed", lambda s, t: (s / "waivers.yml").write_text("waivers:\n  - check: x\n"), [],
     ["waiver file waivers.yml: "]),
    ("waivers-too-deep", lambda s, t: (s / "waivers.yml").write_text("waivers: " + "[" * 10_000 + "]" * 10_000), [],
     ["nested deeper than 100 levels"]),
    ("waivers-missing", None, ["--waivers", "{tmp}/w.yml"], ["waiver file {tmp}/w.yml: file not found"]),
    ("baseline-not-a-report", lambda s, t: (t / "b.json").write_text("[1]"), ["--baseline", "{tmp}/b.json"],
     ["--baseline {tmp}/b.json: not a stackproof JSON report"]),
    ("options", None, ["--engine", "k8s", "--stack-timeout", "soon", "--env-file", "{tmp}/none.env"],
     ["--stack-timeout 'soon': a number of seconds above 0", "--engine 'k8s': one of compose, swarm, podman",
      "--env-file {tmp}/none.env: no such file"]),
    ("unknown-options", None, ["--statc", "--report-dri", "{tmp}/r"],
     ["unknown option --statc: did you mean --static?", "unknown option --report-dri: did you mean --report-dir?"]),
]


@pytest.mark.parametrize("break_it, args, lines", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_usage_mistakes_exit_2_one_line_each(stack_copy, tmp_path, break_it, args, lines):
    if break_it is not None:
        break_it(stack_copy, tmp_path)
    fill = {"tmp": str(tmp_path), "stack": str(stack_copy)}
    args = [arg.format(**fill) for arg in args]
    if "--stack-dir" not in args:
        args = ["--stack-dir", str(stack_copy), *args]
    report_dir = tmp_path / "reports"
    done = stackproof("validate", "--static", "--report-dir", str(report_dir), *args, cwd=tmp_path)
    assert_usage_error(done, report_dir, *(line.format(**fill) for line in lines))


def test_plain_pytest_says_the_same_with_its_own_usage_code(run_static, tmp_path):
    """`pytest suites/` names the problem the same way and exits with pytest's usage error code."""
    run = run_static(tmp_path / "nowhere")
    assert run.ret == pytest.ExitCode.USAGE_ERROR and run.report is None
    assert f"ERROR: --stack-dir {tmp_path}/nowhere: no such directory" in run.stderr


def test_a_mistyped_stack_dir_never_sets_up_the_reference_stack(monkeypatch, tmp_path, capsys):
    """`--stack-dri DIR` is not `--stack-dir` left out: the bundled stack is neither set up nor started."""
    set_up = []
    monkeypatch.setattr(cli, "setup_reference_stack", lambda: set_up.append(1) or REPO / "stack")
    monkeypatch.setattr(cli, "up", lambda engine="compose": set_up.append(1) or REPO / "stack")
    monkeypatch.delenv("STACKPROOF_STACK_DIR", raising=False)
    for static in (["--static"], []):
        assert cli.main(["validate", *static, "--stack-dri", str(tmp_path)]) == 2
    assert set_up == []
    assert "unknown option --stack-dri: did you mean --stack-dir?" in capsys.readouterr().err


@pytest.mark.parametrize("typed, meant", [("valdate", "validate"), ("int", "init"), ("dwn", "down")])
def test_unknown_command_did_you_mean(tmp_path, typed, meant):
    done = stackproof(typed, cwd=tmp_path)
    assert done.returncode == 2 and f"unknown command '{typed}': did you mean {meant}?" in done.stderr


def test_validate_help_lists_every_option_grouped_with_defaults(tmp_path):
    done = stackproof("validate", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    for option in OPTIONS:
        assert option.flag in text, option.flag
    for title in ("the stack and how it is reached", "what the run may do", "reports, history and waivers"):
        assert f"{title}:" in done.stdout
    assert "(default: 20; also $STACKPROOF_TIMEOUT" in text and "2 usage error" in text


@pytest.mark.skipif(shutil.which("bash") is None, reason="bin/stackproof is a bash script")
def test_bin_stackproof_help_exits_0_and_a_typo_2(tmp_path):
    wrapper = str(REPO / "bin/stackproof")
    assert subprocess.run([wrapper, "--help"], capture_output=True, timeout=30).returncode == 0
    typo = subprocess.run([wrapper, "selftst"], capture_output=True, text=True, timeout=30)
    assert typo.returncode == 2 and "did you mean selftest?" in typo.stderr
