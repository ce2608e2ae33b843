"""Command lines as a shell would run them, read without running anything.

A service's command is often a shell loop, `sh -c "while :; do cert-expiry.sh -o /textfile/x.prom
/certs/a.crt; sleep 3600; done"`: the arguments a check must judge sit inside one string. shlex splits
that string as a POSIX shell splits words; the separators (`;`, `&&`, `|`, newlines...) cut it into
simple commands, each with the `VAR=value` assignments in front of it as its own environment.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh"})
# words that start a compound command or wrap the next one: the simple command follows them
LEADING_KEYWORDS = frozenset({"while", "until", "if", "then", "else", "elif", "do", "exec", "time", "!", "{", "nohup"})
SEPARATOR_CHARS = frozenset(";&|()\n")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
COMMAND_STRING_OPTION = re.compile(r"^-[a-z]*c[a-z]*$")  # -c, -ec, -lc, -xc
OPTIONS_WITH_ARGUMENT = frozenset({"-o", "+o", "-O", "+O"})  # bash -o pipefail -c STRING


@dataclass(frozen=True)
class SimpleCommand:
    """One command a command line runs: its words and the variables assigned in front of it."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def command_string(argv: list[str]) -> str | None:
    """The string a shell is told to run (`sh -c STRING`, `/bin/bash -ec STRING`), None for another program."""
    if not argv or PurePosixPath(argv[0]).name not in SHELLS:
        return None
    index = 1
    while index < len(argv) - 1:
        arg = argv[index]
        if COMMAND_STRING_OPTION.match(arg):
            return argv[index + 1]
        if not arg.startswith(("-", "+")):
            return None  # a script file, not a string
        index += 2 if arg in OPTIONS_WITH_ARGUMENT else 1
    return None


def simple_commands(argv: list[str]) -> list[SimpleCommand]:
    """The simple commands `argv` runs: `argv` itself, or each command of a shell's `-c` string (nested
    shells followed). A string that does not split (an unclosed quote) runs nothing this can read."""
    script = command_string(argv)
    if script is None:
        return [_simple(argv)] if argv else []
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace, lexer.whitespace_split = " \t\r", True
    try:
        words = list(lexer)
    except ValueError:
        return []
    found: list[SimpleCommand] = []
    current: list[str] = []
    for word in [*words, ";"]:
        if set(word) <= SEPARATOR_CHARS:
            if current:
                command = _simple(current)
                found += simple_commands(command.argv) if command_string(command.argv) else [command]
            current = []
        else:
            current.append(word)
    return [command for command in found if command.argv]


def _simple(words: list[str]) -> SimpleCommand:
    """Leading keywords and assignments taken off, redirections (`> file`, `2>&1`) dropped."""
    env: dict[str, str] = {}
    argv: list[str] = []
    skip_next = False
    for index, word in enumerate(words):
        if skip_next:
            skip_next = False
            continue
        if set(word) <= set("<>&") and word.strip("&"):  # a redirection: its target follows
            skip_next = True
            continue
        if word.isdigit() and index + 1 < len(words) and set(words[index + 1]) <= set("<>&"):
            continue  # the descriptor of `2> file`
        if not argv and word in LEADING_KEYWORDS:
            continue
        if not argv and ASSIGNMENT.match(word):
            name, _, value = word.partition("=")
            env[name] = value
            continue
        argv.append(word)
    return SimpleCommand(argv, env)
