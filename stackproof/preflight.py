"""Usage errors: what must be right before any check runs.

A run whose options, stack dir or profile are wrong judges nothing about the stack: reporting
it as a NO-GO with every control failed ("error in setup: stack dir not found") blames the
stack for the operator's mistake. These are found before the first check, all of them at
once, each one line; the plugin raises them as a usage error (no report; `stackproof` exits 2,
pytest itself 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from stackproof.engine.engines import ENGINES
from stackproof.errors import NotDeclared, StackError
from stackproof.target.profile import ProfileError
from stackproof.target.stack import Stack

INIT_HINT = "run `stackproof init --stack-dir {root}` to write a stackproof.yml that names the stack's files"


def option_problems(value: Callable[[str], str], env_files: list[str]) -> list[str]:
    """The options' values: numbers where seconds are meant, a known engine, env files that exist."""
    problems = []
    for name in ("stack_timeout", "run_timeout"):
        text = value(name)
        try:
            ok = float(text) > 0
        except ValueError:
            ok = False
        if not ok:
            problems.append(f"--{name.replace('_', '-')} {text!r}: a number of seconds above 0")
    engine = value("engine")
    if engine and engine not in ENGINES:
        problems.append(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    for path in env_files:
        if not Path(path).expanduser().is_file():
            problems.append(f"--env-file {path}: no such file")
    return problems


def stack_problems(stack: Stack) -> list[str]:
    """The stack dir exists and is a directory, its profile (and the operator's) loads, and there is a
    compose file where the profile says, else where Compose itself looks (Stack.path). Without these no check can judge anything."""
    root = stack.root
    if not root.exists():
        return [f"--stack-dir {root}: no such directory"]
    if not root.is_dir():
        return [f"--stack-dir {root}: not a directory"]
    try:
        profile = stack.profile
    except ProfileError as exc:
        return exc.problems
    except StackError as exc:
        return [str(exc)]
    try:
        compose = stack.path("compose")
    except NotDeclared as exc:  # the profile names none and none is where Compose itself looks
        return [f"{root}: {exc}: " + INIT_HINT.format(root=root)]
    except StackError:  # there is one, but the suite may not read it (a symlink out, a loop): a finding about
        return []       # the stack, which the run reports as the compose model's root cause, not a usage error
    if not compose.exists() and not compose.is_symlink():
        where = profile.set_by.get("paths.compose", "COMPOSE_FILE in .env")
        return [f"{root}: no compose file at {stack.rel(compose)}, where {where} says (paths.compose): "
                + INIT_HINT.format(root=root)]
    return []
