"""The pool of a service that runs an application the suite knows (stackproof/target/pool_libraries.py):
LiteLLM's proxy reads `general_settings.database_connection_pool_limit` from the file its `--config` names,
takes 10 when it is not set, and has no overflow and no pre-ping. A stack in LiteLLM's keys is judged in
them; a stack that merely names its file like LiteLLM's, without running LiteLLM, is not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stackproof.init import write_profile
from stackproof.target.pool_libraries import LITELLM, config_argument

LITELLM_IMAGE = "ghcr.io/berriai/litellm:v1.80.0-stable.1"


def gateway_stack(root: Path, general_settings: dict | None, image: str = LITELLM_IMAGE) -> Path:
    """A gateway running `image` with --config naming its bind-mounted config, and its database."""
    (root / "litellm").mkdir(parents=True)
    config = {"model_list": [{"model_name": "chat", "litellm_params": {"model": "openai/chat"}}]}
    if general_settings is not None:
        config["general_settings"] = general_settings
    (root / "litellm/config.yaml").write_text(yaml.safe_dump(config))
    (root / "secrets").mkdir(mode=0o700)
    (root / "secrets/master_key").write_text("sk-" + "7f3a9c" * 8 + "\n")
    compose = {"services": {
        "gateway": {"image": image, "command": ["--config", "/app/config.yaml", "--port", "4000"],
                    "volumes": ["./litellm/config.yaml:/app/config.yaml:ro"], "depends_on": ["db"],
                    "secrets": ["master_key"],
                    "environment": {"DATABASE_URL": "postgresql://gateway@db:5432/gateway"}},
        "db": {"image": "postgres:16", "environment": {"POSTGRES_DB": "gateway"}},
    }, "secrets": {"master_key": {"file": "./secrets/master_key"}}}
    (root / "compose.yml").write_text(yaml.safe_dump(compose))
    (root / "stackproof.yml").write_text(yaml.safe_dump({
        "roles": {"postgres": "db", "api_services": ["gateway"]},
        "paths": {"compose": "compose.yml", "pool_config": "litellm/config.yaml"}}))
    return root


def pool_rows(run) -> dict[str, dict]:
    return {row["nodeid"].split("::")[1]: row for control in run.report["controls"] if control["id"] == "connection_pool"
            for row in control["checks"]}


def test_litellm_pool_left_at_its_default_fails_naming_the_default(tmp_path, run_static):
    """No pool keys in LiteLLM's config: its pool is LiteLLM's 10 connections, too small for the bar, and the
    failure says so in LiteLLM's key; overflow and pre-ping, which LiteLLM has none of, are not applicable."""
    run = run_static(gateway_stack(tmp_path / "stack", {"master_key": "os.environ/MASTER_KEY"}), "-k", "pool")
    rows = pool_rows(run)
    assert rows["test_pool_config_setting[size]"]["status"] == "FAIL"
    assert rows["test_pool_config_setting[size]"]["reason"] == (
        "litellm/config.yaml: general_settings.database_connection_pool_limit is not set: LiteLLM's default 10 "
        "(expected integer >= 20)")
    for setting in ("max_overflow", "pre_ping"):
        row = rows[f"test_pool_config_setting[{setting}]"]
        assert (row["status"], row["not_run"]) == ("SKIPPED", "not_applicable"), row
        assert row["reason"].startswith("litellm/config.yaml: LiteLLM's Prisma client"), row["reason"]
    assert rows["test_pool_config_setting[timeout]"]["status"] == "PASS"
    assert rows["test_pool_config_setting[timeout]"]["result"] == "not set: LiteLLM's default 60"
    assert "gateway: size 10, no overflow, max 10" in rows["test_effective_pool_per_service"]["reason"]
    assert rows["test_pool_config_total"]["status"] == "FAIL"


def test_litellm_pool_set_large_enough_passes(tmp_path, run_static):
    """database_connection_pool_limit 60: every pool check passes (the pool fits Postgres' default 100)."""
    run = run_static(gateway_stack(tmp_path / "stack", {"database_connection_pool_limit": 60,
                                                         "database_connection_pool_timeout": 30}), "-k", "pool")
    rows = pool_rows(run)
    assert {name: row["status"] for name, row in rows.items() if row["status"] not in ("PASS", "SKIPPED")} == {}
    assert rows["test_pool_config_total"]["result"] == "60 (no overflow)"
    assert rows["test_pool_config_setting[size]"]["result"] == "60"


def test_litellm_keys_in_a_service_that_does_not_run_litellm_are_not_its_pool(tmp_path, run_static):
    """The same file, mounted the same way, into a service of another image: the profile's pool keys apply,
    so a large LiteLLM limit does not pass for the pool (the stack cannot borrow an application's rules)."""
    stack = gateway_stack(tmp_path / "stack", {"database_connection_pool_limit": 60}, image="example/gateway:1")
    rows = pool_rows(run_static(stack, "-k", "pool"))
    assert rows["test_pool_config_setting[size]"]["status"] == "FAIL"
    assert "no database.postgres.pool mapping" in rows["test_pool_config_setting[size]"]["reason"]


def test_init_names_litellm_config_as_the_pool_config(tmp_path):
    stack = gateway_stack(tmp_path / "stack", {"master_key": "os.environ/MASTER_KEY"})
    (stack / "stackproof.yml").unlink()
    write_profile(stack)
    profile = (stack / "stackproof.yml").read_text()
    assert yaml.safe_load(profile)["paths"]["pool_config"] == "litellm/config.yaml"
    assert ("gateway runs LiteLLM (ghcr.io/berriai/litellm:v1.80.0-stable.1) with --config /app/config.yaml, a bind "
            "mount of litellm/config.yaml: its pool is general_settings.database_connection_pool_limit") in profile


@pytest.mark.parametrize("command, found", [
    (["--config", "/app/c.yaml"], "/app/c.yaml"),
    (["--port", "4000", "--config=/etc/litellm.yaml"], "/etc/litellm.yaml"),
    (["--config"], None),
    (["--configs", "/x"], None),
    ([], None),
])
def test_config_argument(command, found):
    assert config_argument(command, LITELLM.config_flag) == found


@pytest.mark.parametrize("image, runs", [
    ("ghcr.io/berriai/litellm:v1.80.0-stable.1", True),
    ("ghcr.io/berriai/litellm-database:main-latest", True),
    ("litellm/litellm@sha256:abc", True),
    ("berriai/litellm", True),
    ("example/litellm-proxy-helper:1", False),
    ("example/notlitellm:1", False),
])
def test_litellm_images(image, runs):
    assert bool(LITELLM.image.search(image)) is runs


def test_a_pool_set_nowhere_is_not_proven_naming_where_it_could_be_set(tmp_path, run_static):
    """An API service that mounts no pool config and sets no pool variable, whose env file names its pool
    variables only commented out or empty, and whose code lies outside the stack dir: its pool is its code's
    default, which the suite cannot read. Every pool check is NOT PROVEN with that reason, said of this
    stack (its service, its env file, its build context), naming nothing of the reference stack."""
    root = tmp_path / "repo/deploy"
    (tmp_path / "repo/backend").mkdir(parents=True)
    root.mkdir()
    (root / "app.env").write_text("APP_NAME=shop\n# APP_DB_POOL_SIZE=\nAPP_DB_POOL_MAX_OVERFLOW=\n")
    (root / "compose.yml").write_text(yaml.safe_dump({"services": {
        "api": {"build": {"context": "../backend"}, "env_file": ["app.env"], "depends_on": ["db"]},
        "db": {"image": "postgres:16"}}}))
    (root / "stackproof.yml").write_text(yaml.safe_dump({"roles": {"postgres": "db", "api_services": ["api"]}}))
    rows = pool_rows(run_static(root, "-k", "pool"))
    expected = ("not proven: no pool setting for api: no config file they mount holds a pool mapping (pool.config_key), and their "
                "environment sets no pool variable (pool.size_env and pool.overflow_env, or a name ending in POOL_SIZE "
                "and POOL_OVERFLOW); app.env names APP_DB_POOL_MAX_OVERFLOW, APP_DB_POOL_SIZE only commented out or "
                "empty; so their pools are what their code sets by default (api: build context ../backend, outside "
                "the stack dir)")
    not_run = {name: row["reason"] for name, row in rows.items() if row["status"] == "SKIPPED"}
    assert set(not_run) >= {f"test_pool_config_setting[{s}]" for s in ("size", "max_overflow", "timeout", "pre_ping")}
    assert set(not_run.values()) == {expected}, not_run
    assert not any(row["status"] == "FAIL" for row in rows.values()), rows


def url_stack(root: Path, api_url: str, worker_url: str | None = None) -> Path:
    """An API service (and perhaps a worker) whose pool is the query of its DATABASE_URL, nothing else."""
    (root / "secrets").mkdir(parents=True, mode=0o700)
    (root / "secrets/api_key").write_text("4f9c" * 16 + "\n")
    services = {"api": {"image": "example/api:1", "depends_on": ["db"], "environment": {"DATABASE_URL": api_url},
                        "secrets": ["api_key"]},
                "db": {"image": "postgres:16"}}
    if worker_url is not None:
        services["worker"] = {"image": "example/worker:1", "environment": {"DATABASE_URL": worker_url}}
    (root / "compose.yml").write_text(yaml.safe_dump({"services": services,
                                                      "secrets": {"api_key": {"file": "./secrets/api_key"}}}))
    (root / "stackproof.yml").write_text(yaml.safe_dump({"roles": {"postgres": "db", "api_services": ["api"]}}))
    return root


PGX_URL = "postgres://api:{password}@db:5432/api?sslmode=disable&pool_max_conns={size}"
PRISMA_URL = "postgresql://api:{password}@db:5432/api?schema=public&connection_limit={size}&pool_timeout={timeout}"
URL_PASSWORD = "Zq8vLw3mRt6yKp1n"


@pytest.mark.parametrize("url, passing", [
    (PGX_URL.format(password=URL_PASSWORD, size=60), {"size", "pre_ping"}),
    (PRISMA_URL.format(password=URL_PASSWORD, size=60, timeout=20), {"size", "timeout"}),
], ids=["pgx", "prisma"])
def test_a_pool_in_the_database_url_is_judged_in_its_library_names(tmp_path, run_static, url, passing):
    """pgx's pool_max_conns and Prisma's connection_limit in DATABASE_URL are the pool: large enough, it passes
    every pool check; what the library has no notion of (an overflow; pgx's timeout, Prisma's pre-ping) is not
    applicable. The URL's password is never in the report."""
    run = run_static(url_stack(tmp_path / "stack", url), "-k", "pool")
    rows = pool_rows(run)
    statuses = {name: (row["status"], row.get("not_run")) for name, row in rows.items()}
    for setting in ("size", "max_overflow", "timeout", "pre_ping"):
        expected = ("PASS", None) if setting in passing else ("SKIPPED", "not_applicable")
        assert statuses[f"test_pool_config_setting[{setting}]"] == expected, (setting, rows)
    for check in ("test_pool_config_total", "test_effective_pool_per_service", "test_pools_fit_postgres"):
        assert statuses[check][0] == "PASS", rows[check]
    written = "".join(path.read_text(errors="replace") for path in run.report_dir.iterdir() if path.is_file())
    assert URL_PASSWORD not in written + run.stdout and "[redacted" not in written


@pytest.mark.parametrize("url, parameter", [
    (PGX_URL.format(password=URL_PASSWORD, size=8), "pool_max_conns=8"),
    (PRISMA_URL.format(password=URL_PASSWORD, size=8, timeout=20), "connection_limit=8"),
], ids=["pgx", "prisma"])
def test_a_small_pool_in_the_database_url_fails_naming_its_parameter(tmp_path, run_static, url, parameter):
    """The size parameter 8: the size, the total and the per-service pool fail, each naming the file, the
    service, the variable and the parameter, never the URL; the other pool checks are unchanged."""
    rows = pool_rows(run_static(url_stack(tmp_path / "stack", url), "-k", "pool"))
    failed = {name: row["reason"] for name, row in rows.items() if row["status"] == "FAIL"}
    assert set(failed) == {"test_pool_config_setting[size]", "test_pool_config_total", "test_effective_pool_per_service"}
    assert failed["test_pool_config_setting[size]"] == (
        f"compose.yml: api: DATABASE_URL {parameter} (expected integer >= 20)")
    assert all(URL_PASSWORD not in reason for reason in failed.values()), failed


def test_workers_url_pools_count_in_the_postgres_budget(tmp_path, run_static):
    """A worker's URL pool is no API pool (no minimum) but its connections count against max_connections:
    60 for the API and 50 for the worker pass 97 of Postgres' default 100 - 3 reserved only without it."""
    stack = url_stack(tmp_path / "stack", PGX_URL.format(password=URL_PASSWORD, size=60),
                      PGX_URL.format(password=URL_PASSWORD, size=50))
    rows = pool_rows(run_static(stack, "-k", "pool"))
    assert {name for name, row in rows.items() if row["status"] == "FAIL"} == {"test_pools_fit_postgres"}, rows
    assert "api 60 + worker 50" in rows["test_pools_fit_postgres"]["reason"]


def test_init_writes_no_pool_todo_for_a_url_pool(tmp_path):
    stack = url_stack(tmp_path / "stack", PGX_URL.format(password=URL_PASSWORD, size=60))
    (stack / "stackproof.yml").unlink()
    _, findings = write_profile(stack)
    assert not any("pool" in todo for todo in findings.todos), findings.todos
