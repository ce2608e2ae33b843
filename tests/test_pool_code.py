"""Pools built in a service's Python code (stackproof/resources/pool_code.py): read with ast, never run. A literal
argument, or an environment variable with the code's default, is what the service gets, its compose environment
winning over the default; an argument left out takes the library's default; a value computed otherwise is not
read, and what needs it is not proven."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stackproof.redact import Redactor
from stackproof.resources.pool_code import read_pool_code
from stackproof.target.stack import Stack


def pools_of(tmp_path: Path, source: str):
    (tmp_path / "app").mkdir(parents=True, exist_ok=True)
    (tmp_path / "app/db.py").write_text(source)
    return read_pool_code(Stack(tmp_path, 20, Redactor()), tmp_path)


@pytest.mark.parametrize("source, expected", [
    ("from sqlalchemy import create_engine\nengine = create_engine(URL, pool_size=25, max_overflow=35, "
     "pool_timeout=10, pool_pre_ping=True)\n",
     {"size": (25, None), "max_overflow": (35, None), "timeout": (10, None), "pre_ping": (True, None)}),
    ("import os\nfrom sqlalchemy.ext.asyncio import create_async_engine\n"
     "SIZE = int(os.getenv('APP_POOL_SIZE', '15'))\n"
     "engine = create_async_engine(URL, pool_size=SIZE, max_overflow=int(os.environ.get('APP_POOL_OVERFLOW') or 40),\n"
     "    pool_pre_ping=os.environ.get('APP_PRE_PING', 'true').lower() == 'true')\n",
     {"size": (15, "APP_POOL_SIZE"), "max_overflow": (40, "APP_POOL_OVERFLOW"), "timeout": (30, None),
      "pre_ping": (True, "APP_PRE_PING")}),
    ("import asyncpg\npool = await asyncpg.create_pool(DSN, min_size=20, max_size=60)\n",
     {"size": (20, None), "cap": (60, None)}),
    ("from psycopg_pool import ConnectionPool\npool = ConnectionPool(DSN, min_size=8, check=ConnectionPool.check_connection)\n",
     {"size": (8, None), "cap": (8, None), "timeout": (30, None), "pre_ping": (True, None)}),
    ("from sqlalchemy import create_engine\nengine = create_engine(URL, pool_size=settings.pool_size)\n",
     {"size": (None, None), "max_overflow": (10, None), "timeout": (30, None), "pre_ping": (False, None)}),
], ids=["sqlalchemy-literals", "async-engine-from-environment", "asyncpg", "psycopg-pool", "computed"])
def test_pool_arguments(tmp_path, source, expected):
    (pool,) = pools_of(tmp_path, source)
    assert {name: (s.value, s.variable) for name, s in pool.settings.items()} == expected


def code_stack(root: Path, source: str, environment: dict | None = None) -> Path:
    """An API service built from ./api whose code builds its pool, and its database."""
    (root / "api/app").mkdir(parents=True)
    (root / "api/app/db.py").write_text(source)
    (root / "api/Dockerfile").write_text("FROM python:3.12-slim\nCOPY app /app\n")
    (root / "secrets").mkdir(mode=0o700)
    (root / "secrets/api_key").write_text("9e1b" * 16 + "\n")
    (root / "compose.yml").write_text(yaml.safe_dump({"services": {
        "api": {"build": "./api", "depends_on": ["db"], "secrets": ["api_key"], "environment": environment or {}},
        "db": {"image": "postgres:16"}}, "secrets": {"api_key": {"file": "./secrets/api_key"}}}))
    (root / "stackproof.yml").write_text(yaml.safe_dump({"roles": {"postgres": "db", "api_services": ["api"]}}))
    return root


SOURCE = ("import os\nfrom sqlalchemy import create_engine\n\n"
          "engine = create_engine(\n    os.environ['DATABASE_URL'],\n"
          "    pool_size=int(os.getenv('SHOP_POOL_SIZE', '5')),\n    max_overflow=int(os.getenv('SHOP_POOL_OVERFLOW', '30')),\n"
          "    pool_timeout=30,\n    pool_pre_ping=True,\n)\n")


def pool_rows(run) -> dict[str, dict]:
    return {row["nodeid"].split("::")[1]: row for control in run.report["controls"] if control["id"] == "connection_pool"
            for row in control["checks"]}


def test_a_code_default_too_small_fails_naming_the_code_and_its_variable(tmp_path, run_static):
    rows = pool_rows(run_static(code_stack(tmp_path / "stack", SOURCE), "-k", "pool"))
    failed = {name: row["reason"] for name, row in rows.items() if row["status"] == "FAIL"}
    assert set(failed) == {"test_pool_config_setting[size]", "test_pool_config_total", "test_effective_pool_per_service"}
    assert failed["test_pool_config_setting[size]"] == (
        "api/app/db.py:4: api: create_engine SHOP_POOL_SIZE not set: the code's default 5 (expected integer >= 20)")
    assert "api: size 5, overflow 30, max 35 (create_engine at api/app/db.py:4)" in failed["test_pool_config_total"]


def test_the_environment_overrides_the_code_default(tmp_path, run_static):
    rows = pool_rows(run_static(code_stack(tmp_path / "stack", SOURCE, {"SHOP_POOL_SIZE": "25"}), "-k", "pool"))
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(rows, "PASS"), rows
    assert rows["test_pool_config_setting[size]"]["result"] == "api: create_engine SHOP_POOL_SIZE=25"


def test_a_pool_computed_at_run_time_is_not_proven(tmp_path, run_static):
    source = ("from sqlalchemy import create_engine\nengine = create_engine(URL, pool_size=settings.size, max_overflow=30, "
              "pool_timeout=30, pool_pre_ping=True)\n")
    rows = pool_rows(run_static(code_stack(tmp_path / "stack", source), "-k", "pool"))
    size = rows["test_pool_config_setting[size]"]
    assert (size["status"], size["not_run"]) == ("SKIPPED", "not_proven"), size
    assert size["reason"] == ("not proven: api/app/db.py:2: api: create_engine pool_size computed when the code runs: "
                              "not known without running it"), size["reason"]
    assert not [row for row in rows.values() if row["status"] == "FAIL"], rows


def test_a_pool_variable_left_unset_takes_the_code_default_in_an_environment_pool(tmp_path, run_static):
    """The profile names the pool variables (init found them in the environment): the one the service leaves
    unset is judged at the default of the code that reads it, named with its line, not as "not set"."""
    stack = code_stack(tmp_path / "stack", SOURCE, {"SHOP_POOL_SIZE": "25"})
    profile = yaml.safe_load((stack / "stackproof.yml").read_text())
    profile["pool"] = {"size_env": "SHOP_POOL_SIZE", "overflow_env": "SHOP_POOL_OVERFLOW"}
    (stack / "stackproof.yml").write_text(yaml.safe_dump(profile))
    rows = pool_rows(run_static(stack, "-k", "pool_config_setting or pool_config_total or effective or fit"))
    overflow = rows["test_pool_config_setting[max_overflow]"]
    assert overflow["status"] == "PASS", overflow
    assert overflow["result"] == "api: not set: the code's default 30 (api/app/db.py:4)"
    assert rows["test_effective_pool_per_service"]["status"] == "PASS", rows["test_effective_pool_per_service"]
    (stack / "api/app/db.py").write_text(SOURCE.replace("'SHOP_POOL_OVERFLOW', '30'", "'SHOP_POOL_OVERFLOW', '3'"))
    rows = pool_rows(run_static(stack, "-k", "pool_config_setting"))
    assert rows["test_pool_config_setting[max_overflow]"]["reason"] == (
        "api/app/db.py:4: api: SHOP_POOL_OVERFLOW not set: the code's default 3 (expected integer >= 30)")


def test_init_writes_no_pool_todo_for_a_pool_built_in_code(tmp_path):
    from stackproof.init import write_profile
    stack = code_stack(tmp_path / "stack", SOURCE)
    (stack / "stackproof.yml").unlink()
    _, findings = write_profile(stack)
    assert not any("pool" in todo for todo in findings.todos), findings.todos


def test_the_live_pool_check_compares_with_the_pool_the_code_and_environment_give(tmp_path):
    """Without a pool config file, the running service's pool gauges are compared with the pool its files give it
    (here its code's default overflow and its environment's size), not with a config file it does not have."""
    import importlib.util
    import sys
    from types import SimpleNamespace

    from stackproof.evidence import Evidence

    spec = importlib.util.spec_from_file_location("pool_suite", Path(__file__).parents[1] / "suites/test_connection_pool.py")
    suite = importlib.util.module_from_spec(spec)
    sys.modules["pool_suite"] = suite  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(suite)
    finally:
        del sys.modules["pool_suite"]
    stack = Stack(code_stack(tmp_path / "stack", SOURCE, {"SHOP_POOL_SIZE": "25"}), 20, Redactor())
    cfg = stack.profile["pool"]

    def live_reporting(size: int, overflow: int):
        page = f"{cfg['size_metric']} {size}\n{cfg['overflow_metric']} {overflow}\n".encode()
        return SimpleNamespace(stack=stack, http=SimpleNamespace(metrics_service="api",
                                                    metrics_page=lambda service: SimpleNamespace(status=200, body=page)))

    evidence = Evidence()
    suite.test_live_pool_matches_config(stack, live_reporting(25, 30), evidence)
    assert evidence.expected.startswith("25 / 30 (api/app/db.py: api: size 25, overflow 30, max 55"), evidence.expected
    with pytest.raises(AssertionError, match=r"service api: /metrics reports pool size / max_overflow 5 / 30, "
                                             r"api/app/db.py: api: size 25"):
        suite.test_live_pool_matches_config(stack, live_reporting(5, 30), Evidence())


HOSTILE_PYTHON = {
    "deep-sum": "x = " + "1+" * 200_000 + "1\n",  # the AST builder's RecursionError
    "deep-unary": "x = " + "-" * 100_000 + "1\n",  # the parser's own stack: MemoryError
    "deep-attribute": "x = a" + ".b" * 100_000 + "\n",
    "nested-brackets": "x = " + "[" * 300 + "]" * 300 + "\n",
    "nul-byte": "x = 1\0\n",
}


@pytest.mark.parametrize("source", HOSTILE_PYTHON.values(), ids=list(HOSTILE_PYTHON))
def test_python_the_parser_cannot_take_declares_nothing_and_ends_nothing(tmp_path, run_static, source):
    """The class of Python files that make `ast.parse` raise (nesting past the parser's or the AST builder's
    limits, a NUL): beside the service's real code they are read as no module. The pool the real code builds
    is still judged, the breaker checks say what the code lacks, and init and the run end normally."""
    from stackproof.init import write_profile
    stack = code_stack(tmp_path / "stack", SOURCE, {"SHOP_POOL_SIZE": "25"})
    (stack / "api/app/generated.py").write_text(source)
    _, findings = write_profile(stack, force=True)
    assert not any("pool" in todo for todo in findings.todos), findings.todos
    run = run_static(stack, "-k", "pool or breaker")
    assert run.report is not None and run.ret == 1 and "INTERNALERROR" not in run.stdout + run.stderr, run.stdout[-2000:]
    rows = pool_rows(run)
    assert rows["test_pool_config_setting[size]"]["result"] == "api: 25"  # init named the code's variables
    assert rows["test_pool_config_setting[max_overflow]"]["result"] == "api: not set: the code's default 30 (api/app/db.py:4)"
    assert rows["test_pool_config_setting[timeout]"]["result"] == "api: not set: the code sets pool_timeout 30 (api/app/db.py:4)"
    assert not [row for row in rows.values() if row["status"] == "FAIL"], rows
