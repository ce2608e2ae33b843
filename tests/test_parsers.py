"""Property tests for the parsers the suite owns: whatever the stack holds, they return a
value or raise a one-line StackError naming the file; they never crash or hang."""

from __future__ import annotations

import re
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stackproof.target.compose import _parse_volume, _secret_mode
from stackproof.errors import StackError
from stackproof.target.profile import DEFAULTS, PROFILE_FILE, Profile
from stackproof.redact import MAX_TEXT, Redactor, clean
from stackproof.io.yamlio import parse_yaml
from stackproof.resources.keys import decode_key, key_strength

yaml_ish = st.text(alphabet=st.sampled_from(list("ab:- []{}&*<>!|\n\t'\"#,?0123456789")), max_size=80)


@given(st.one_of(yaml_ish, st.text(max_size=80)))
def test_yaml_loader_returns_or_explains(text):
    try:
        parse_yaml(text, "f.yml")
    except StackError as exc:
        assert str(exc).startswith("f.yml:") and "\n" not in str(exc)


def test_many_plain_nodes_are_not_a_bomb():
    """10,000 plain alerts are a large file, not a bomb: only what aliases add counts as expansion."""
    rule = "  - alert: A{}\n    expr: up == 0\n    for: 5m\n    labels: {{severity: critical}}\n"  # 12 nodes
    doc = parse_yaml("groups:\n- name: g\n  rules:\n" + "".join(rule.format(i) for i in range(10_000)), "rules.yml")
    assert len(doc["groups"][0]["rules"]) == 10_000


def _overrides(defaults: dict):
    """Profile overrides: mostly known keys with values of any shape, sometimes unknown keys."""
    leaf = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=10), st.booleans(), st.none())
    known = st.fixed_dictionaries({}, optional={
        section: st.dictionaries(st.sampled_from(sorted(values)) | st.text(min_size=1, max_size=6), leaf, max_size=3)
        for section, values in defaults.items()
    })
    return st.one_of(known, st.dictionaries(st.text(min_size=1, max_size=6), leaf, max_size=2))


@settings(max_examples=60)
@given(_overrides(DEFAULTS))
def test_profile_merges_or_explains(tmp_path_factory, override):
    import yaml

    root = tmp_path_factory.mktemp("stack")
    (root / PROFILE_FILE).write_text(yaml.safe_dump(override))
    try:
        profile = Profile.load(root)
    except StackError as exc:
        assert str(exc).startswith(PROFILE_FILE) and "\n" not in str(exc)
    else:
        for section, values in override.items():
            for key, value in values.items():
                assert profile[section][key] == value


@given(st.binary(max_size=200))
def test_key_decoding_never_crashes(data):
    strength = key_strength(data, Redactor())
    assert strength.random_bytes >= 0 and 0.0 <= strength.entropy <= 8.0


@given(st.binary(min_size=1, max_size=64))
def test_hex_keys_decode_to_their_bytes(raw):
    assert decode_key(raw.hex().encode()) == ("hex", raw)


def test_random_key_of_32_bytes_is_strong_and_a_repeated_one_is_not():
    assert key_strength(secrets.token_hex(32).encode(), Redactor()).entropy >= 4.0
    assert key_strength(b"0" * 64, Redactor()).entropy < 4.0


@given(st.one_of(st.text(max_size=3000), st.binary(max_size=3000)))
def test_clean_output_is_inert_and_bounded(value):
    text = clean(value)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)
    assert len(text) <= MAX_TEXT + 60


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_volume_spec_parses(spec):
    volume = _parse_volume(spec, project_dir=None)
    assert volume["type"] in ("bind", "volume") and isinstance(volume["target"], str)


@pytest.mark.parametrize("value, mode", [(256, 0o400), ("0400", 0o400), ("0o400", 0o400), (None, None), ("400", 400)])
def test_secret_mode_forms(value, mode):
    assert _secret_mode(value) == mode


def test_secret_mode_that_is_not_a_number_is_explained():
    with pytest.raises(StackError, match="secret mode 'rw' is not a number"):
        _secret_mode("rw")
