"""The profile cannot lower the bar silently: every value is type-checked, every value that
differs from the defaults is reported, every weakened threshold is flagged, and the operator
(--profile, --strict-profile) has the last word."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from harness import assert_only_control_fails, merge_into_profile, operator_interface

from stackproof.errors import StackError
from stackproof.target.profile import (DEFAULTS, INTERFACES, PROFILE_FILE, THRESHOLDS, Profile, ProfileError, _leaves,
                                       _schema, weakens)

KEY = "ai-stack/compose/secrets/stack_api_key"
SECRETS = "ai-stack/compose/secrets"


def _load(tmp_path: Path, text: str, **kwargs) -> Profile:
    (tmp_path / PROFILE_FILE).write_text(text)
    return Profile.load(tmp_path, **kwargs)


def test_every_key_is_a_threshold_or_an_interface():
    """A key added to DEFAULTS must say whether it sets the bar (and what weakens it) or only
    says where the stack keeps a thing; otherwise any change to it would be flagged as weakening."""
    from fnmatch import fnmatchcase

    keys = [key for key, _ in _leaves(DEFAULTS, _schema().sections)]
    unclassified = [k for k in keys if k not in THRESHOLDS and not any(fnmatchcase(k, p) for p in INTERFACES)]
    both = [k for k in THRESHOLDS if any(fnmatchcase(k, p) for p in INTERFACES) and not k.startswith("live.")]
    stale = [k for k in THRESHOLDS if k not in keys]
    assert not unclassified, f"add to THRESHOLDS or INTERFACES in stackproof/profile.py: {unclassified}"
    assert not both and not stale, (both, stale)


# (profile text, the one line it must give)
WRONG_TYPES = [
    ("pool:\n  min_size: '30'\n", "stackproof.yml: pool.min_size must be an integer, got str '30'"),
    ("pool:\n  min_size: true\n", "stackproof.yml: pool.min_size must be an integer, got bool True"),
    ("paths:\n  compose: 123\n", "stackproof.yml: paths.compose must be a string, got int 123"),
    ("paths:\n  compose: [a.yml, b.yml]\n", "stackproof.yml: paths.compose must be a string, got list ['a.yml', 'b.yml']"),
    ("paths:\n  compose_overrides: a.yml\n", "stackproof.yml: paths.compose_overrides must be a list of strings, got str"),
    ("paths:\n  compose_overrides: [1]\n", "stackproof.yml: paths.compose_overrides must be a list of strings, got list [1]"),
    ("pool: 5\n", "stackproof.yml: pool must be a mapping, got int 5"),
    ("pool:\n", "stackproof.yml: pool must be a mapping, got NoneType None"),
    ("api_key:\n  file_modes: ['0o600']\n", "stackproof.yml: api_key.file_modes must be a list of modes written in YAML octal"),
    ("disclosure:\n  min_savings: high\n", "stackproof.yml: disclosure.min_savings must be a number, got str 'high'"),
    ("disclosure:\n  responses: [a.json]\n", "stackproof.yml: disclosure.responses must be a mapping of names to file paths"),
    ("disclosure:\n  responses:\n    health: {a: 1}\n", "stackproof.yml: disclosure.responses must be a mapping of names to file paths"),
    ("alerts:\n  required: [1, 2]\n", "stackproof.yml: alerts.required must be a list of strings, got list [1, 2]"),
    ("pool:\n  min_sise: 5\n", "stackproof.yml: unknown key 'pool.min_sise' (did you mean 'min_size'? known in pool: "
                              "config_key, min_size"),
    ("nope: 1\n", "stackproof.yml: unknown key 'nope' (known in the profile: roles, compose, paths, api_key"),
    ("- a\n- b\n", "stackproof.yml: must be a mapping"),
    ("pool:\n  min_size:" + " [" * 10_000 + "]" * 10_000 + "\n", "stackproof.yml: line 2 invalid YAML: nested deeper than 100 levels"),
    ("pool: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "stackproof.yml: line 1 invalid YAML: nested deeper than 100"),
    ("".join("  " * i + f"k{i}:\n" for i in range(150)), "stackproof.yml: line 100 invalid YAML: nested deeper than 100"),
]


@pytest.mark.parametrize("text, line", WRONG_TYPES, ids=[t[1].split(": ", 1)[1][:40] for t in WRONG_TYPES])
def test_wrong_type_is_one_line_naming_the_key(tmp_path, text, line):
    with pytest.raises(StackError) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    assert message.startswith(line) and "\n" not in message and len(message) < 300, message


def test_every_mistake_at_once_with_the_closest_key(tmp_path):
    """Two files, five mistakes: all of them are named, one line each, a misspelt key with the key it
    most likely meant (the run then stops with a usage error listing them: tests/test_usage_errors.py)."""
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / PROFILE_FILE).write_text("pool:\n  min_sise: 30\n  max_overflw: 1\ntls:\n  warn_days: x\n"
                                                   "alertz: {}\n")
    (tmp_path / "ops.yml").write_text("pool:\n  min_size: '40'\n")
    with pytest.raises(ProfileError) as caught:
        Profile.load(tmp_path / "stack", tmp_path / "ops.yml")
    problems = caught.value.problems
    pool = ", ".join(DEFAULTS["pool"])
    assert sorted(problems) == sorted([
        "stackproof.yml: unknown key 'alertz' (did you mean 'alerts'? known in the profile: " + ", ".join(DEFAULTS) + ")",
        f"stackproof.yml: unknown key 'pool.min_sise' (did you mean 'min_size'? known in pool: {pool})",
        f"stackproof.yml: unknown key 'pool.max_overflw' (did you mean 'min_overflow'? known in pool: {pool})",
        "stackproof.yml: tls.warn_days must be an integer, got str 'x'",
        f"{tmp_path / 'ops.yml'}: pool.min_size must be an integer, got str '40'",
    ]), problems
    assert str(caught.value).endswith("(and 4 more problem(s))")


def test_values_keep_their_types_and_merge(tmp_path):
    """A correct profile keeps working: sections merge key by key, mappings of names are replaced whole."""
    profile = _load(tmp_path, "pool:\n  min_size: 25\ndisclosure:\n  min_savings: 1\n  responses:\n    health: h.json\n")
    assert profile["pool"]["min_size"] == 25 and profile["pool"]["min_overflow"] == DEFAULTS["pool"]["min_overflow"]
    assert profile["disclosure"]["min_savings"] == 1.0 and profile["disclosure"]["responses"] == {"health": "h.json"}
    assert profile.weakened == [] and [c.key for c in profile.changes] == ["pool.min_size", "disclosure.min_savings", "disclosure.responses"]


# (key, value weaker than the default, value at least as strict)
DIRECTIONS = [
    ("pool.min_size", 1, 30),
    ("api_key.file_modes", [0o400, 0o644], [0o400]),
    ("api_key.secrets_dir_mode", 0o755, 0o500),
    ("secrets.mode", 0o440, 0o400),
    ("tls.min_days_left", -100_000, 60),
    ("alerts.required", ["DatabasePoolExhausted"], [*DEFAULTS["alerts"]["required"], "Extra"]),
    ("disclosure.max_tokens", 5000, 500),
    ("disclosure.min_savings", 0.1, 0.9),
    ("pool.default_max_connections", 10_000, 50),
    ("api_key.rotation_uid", 0, 1000),
]


@pytest.mark.parametrize("key, weaker, stricter", DIRECTIONS, ids=[d[0] for d in DIRECTIONS])
def test_direction_of_each_threshold(key, weaker, stricter):
    default = dict(_leaves(DEFAULTS, _schema().sections))[key]
    assert weakens(key, weaker, default) and not weakens(key, stricter, default)


def test_interfaces_are_changes_not_weakenings(tmp_path):
    profile = _load(tmp_path, "live:\n  nginx_port: 8443\npaths:\n  compose: deploy/compose.yml\n")
    assert {c.key for c in profile.changes} == {"live.nginx_port", "paths.compose"} and profile.weakened == []


@pytest.mark.parametrize("key, value", [
    ("paths.pool_config", "/etc/shadow"),
    ("paths.pool_config", "../../../etc/shadow"),
    ("paths.tls_cert", "ai-stack/../../outside.crt"),
    ("paths.pool_config", "link-out/config.yaml"),
    ("disclosure.full_docs", "/etc/passwd"),
], ids=["absolute", "dotdot", "dotdot-inside-a-path", "symlink", "disclosure-file"])
def test_profile_path_outside_the_stack_is_refused(tmp_path, key, value):
    """A profile path that leads out of the stack dir (absolute, `..`, or through a symlink) is a
    one-line failure naming the profile key; the outside file is never named or read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.yaml").write_text("root:x:0:0\n")
    stack = tmp_path / "stack"
    stack.mkdir()
    (stack / "link-out").symlink_to(outside)
    section, name = key.split(".")
    profile = _load(stack, yaml.safe_dump({section: {name: value}}))
    with pytest.raises(StackError) as caught:
        profile.path(name) if section == "paths" else profile.stack_path(value, key)
    assert str(caught.value) == f"stackproof.yml: {key} ({value}) leads outside the stack dir (or into a symlink loop)"


# --- whole runs on copies of the reference stack ---------------------------------------

WEAKENING_PROFILE = """
api_key:
  file_modes: [0400, 0644]
  secrets_dir_mode: 0755
pool:
  min_size: 1
tls:
  min_days_left: -100000
alerts:
  required: [DatabasePoolExhausted]
live:
  nginx_port: 8443
"""


def _weaken(stack: Path) -> None:
    """A stack whose own profile lowers its bar to match its defects (a world-readable key)."""
    merge_into_profile(stack, WEAKENING_PROFILE)
    os.chmod(stack / KEY, 0o644)
    os.chmod(stack / SECRETS, 0o755)


def test_weakening_profile_is_flagged_and_strict_profile_ignores_it(stack_copy, run_static, tmp_path):
    _weaken(stack_copy)
    lenient = run_static(stack_copy)
    assert lenient.report is not None, lenient.stdout[-3000:]
    profile = lenient.report["profile"]
    weakened = {line.split(" = ")[0] for line in profile["weakened"]}
    assert weakened == {"api_key.file_modes", "api_key.secrets_dir_mode", "pool.min_size", "tls.min_days_left",
                        "alerts.required"}
    # the reference profile's own interfaces (its files, its API key, breakers.*) plus the one this test changes
    assert sorted(c["key"] for c in profile["changed"] if not c["weakened"] and not c["key"].startswith("paths.")) == \
        ["api_key.secret", "breakers.requests", "breakers.state_metric", "disclosure.full_docs", "disclosure.responses",
         "live.nginx_port"]
    assert lenient.passed  # the bar the stack set for itself: passed, but never silently
    assert "WEAKENED by the profile: api_key.file_modes = [0400, 0644] (default [0400, 0600]; stackproof.yml)" in lenient.stdout
    assert "WEAKENED by the profile: tls.min_days_left = -100000 (default 30; stackproof.yml)" in lenient.stdout
    markdown = (lenient.report_dir / "validation-report.md").read_text()
    html = (lenient.report_dir / "validation-report.html").read_text()
    assert "| Profile weakens | **` pool.min_size = 1 (default 20; stackproof.yml) `** |" in markdown
    assert "Profile weakens</th><td class=\"fail\">pool.min_size = 1 (default 20; stackproof.yml)" in html

    strict = run_static(stack_copy, "--strict-profile", "--profile", str(operator_interface(tmp_path)))
    assert_only_control_fails(strict, "api_key_permissions", f"{KEY} 0644", f"{SECRETS}: secrets dir mode 0755, expected 0700")
    # the five thresholds, and what the stack's profile says besides where its files are (its API key's secret,
    # its rule tests, its breaker gauge and requests, the nginx port this test sets)
    assert strict.report["profile"]["weakened"] == [] and len(strict.report["profile"]["ignored"]) == 10
    assert "ignored (--strict-profile): pool.min_size = 1 (default 20; stackproof.yml)" in strict.stdout
    assert "ignored (--strict-profile): api_key.secret = 'stack_api_key' (default ''; stackproof.yml)" in strict.stdout
    assert "--strict-profile" in strict.report["target"]["profile"]



def test_operator_profile_from_outside_wins(stack_copy, run_static, tmp_path):
    """--profile: the operator's values win over the stack's own (here: a higher pool minimum than
    the stack's pool has), and the report names both sources."""
    with (stack_copy / PROFILE_FILE).open("a") as profile:
        profile.write("pool:\n  min_size: 1\n")
    operator = tmp_path / "operator.yml"
    operator.write_text("pool:\n  min_size: 40\n")
    run = run_static(stack_copy, "--profile", str(operator))
    assert_only_control_fails(run, "connection_pool", "expected integer >= 40")
    assert run.report["target"]["profile"] == f"stackproof.yml + {operator} (--profile)"
    assert run.report["profile"]["weakened"] == []


