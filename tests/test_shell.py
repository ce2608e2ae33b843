"""Command lines read as a shell splits them (stackproof/target/shell.py): the TLS monitor's arguments
inside a service's `sh -c` loop are found, with the variables assigned in front of it."""

from __future__ import annotations

import pytest

from stackproof.target.shell import SimpleCommand, command_string, simple_commands


@pytest.mark.parametrize("argv, expected", [
    (["sh", "-c", "exec x"], "exec x"),
    (["/bin/bash", "-ec", "x; y"], "x; y"),
    (["bash", "-o", "pipefail", "-c", "x | y"], "x | y"),
    (["bash", "-o", "-c"], None),  # -c is the argument of -o here: no string
    (["python3", "-c", "print(1)"], None),
    (["sh", "script.sh"], None),
    (["sh", "-c"], None),
])
def test_command_string(argv, expected):
    assert command_string(argv) == expected


def test_a_loop_splits_into_its_commands():
    argv = ["sh", "-c", "while :; do cert-expiry.sh -o /textfile/cert_expiry.prom /certs/harbor.crt; sleep 3600; done"]
    assert [c.argv for c in simple_commands(argv)] == [
        [":"], ["cert-expiry.sh", "-o", "/textfile/cert_expiry.prom", "/certs/harbor.crt"], ["sleep", "3600"], ["done"]]


def test_quotes_assignments_redirections_and_separators():
    script = ("set -e\nCERT='/etc/le/live/a b/fullchain.pem' exec python3 /opt/certcheck.py "
              "--textfile=/textfile/c.prom \"$CERT\" 2>&1 >/dev/null && echo done || logger failed | cat")
    commands = simple_commands(["/bin/sh", "-c", script])
    assert commands[0] == SimpleCommand(["set", "-e"])
    assert commands[1] == SimpleCommand(["python3", "/opt/certcheck.py", "--textfile=/textfile/c.prom", "$CERT"],
                                        {"CERT": "/etc/le/live/a b/fullchain.pem"})
    assert [c.argv for c in commands[2:]] == [["echo", "done"], ["logger", "failed"], ["cat"]]


def test_a_nested_shell_is_followed():
    argv = ["sh", "-c", "exec su-exec app sh -c 'certmon --output /textfile/certmon.prom'"]
    assert [c.argv for c in simple_commands(argv)] == [["su-exec", "app", "sh", "-c", "certmon --output /textfile/certmon.prom"]]
    assert simple_commands(["sh", "-c", "sh -c 'certmon --output /t/x.prom'"]) == [
        SimpleCommand(["certmon", "--output", "/t/x.prom"])]


def test_a_plain_command_is_itself_and_an_unclosed_quote_runs_nothing_readable():
    assert simple_commands(["certmon", "--output", "/t/x.prom"]) == [SimpleCommand(["certmon", "--output", "/t/x.prom"])]
    assert simple_commands([]) == []
    assert simple_commands(["sh", "-c", "certmon --output '/t/x.prom"]) == []
