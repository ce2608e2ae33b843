"""PgBouncer in front of Postgres (stackproof/target/pgbouncer.py): the pools behind it count against its
max_client_conn, and its own server pool, not theirs, against Postgres' max_connections. A correct stack whose
pools together exceed Postgres passes because PgBouncer multiplexes them; each defect fails that one check,
naming the setting and where it comes from."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

INI = """[databases]
shop = host=db port=5432 dbname=shop

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
pool_mode = transaction
max_client_conn = {max_client_conn}
default_pool_size = {default_pool_size}
reserve_pool_size = 5
"""


def bouncer_stack(root: Path, *, ini: dict | None = None, bouncer_env: dict | None = None,
                  image: str = "edoburu/pgbouncer:v1.23.1-p2", api_host: str = "pgbouncer") -> Path:
    """Three API replicas and a worker, each with a pool of DB_POOL_SIZE + DB_POOL_MAX_OVERFLOW connections, whose
    database host is PgBouncer; Postgres at its default max_connections 100."""
    root.mkdir(parents=True)
    (root / "secrets").mkdir(mode=0o700)
    (root / "secrets/api_key").write_text("7d2e" * 16 + "\n")
    pool = {"DB_POOL_SIZE": "20", "DB_POOL_MAX_OVERFLOW": "30", "DB_POOL_TIMEOUT": "30", "DB_POOL_PRE_PING": "true"}
    bouncer: dict = {"image": image, "depends_on": ["db"], "environment": dict(bouncer_env or {})}
    if ini is not None:
        (root / "pgbouncer").mkdir()
        (root / "pgbouncer/pgbouncer.ini").write_text(INI.format(**ini))
        bouncer["volumes"] = ["./pgbouncer/pgbouncer.ini:/etc/pgbouncer/pgbouncer.ini:ro"]
    compose = {"services": {
        "api": {"image": "example/shop-api:1", "deploy": {"replicas": 3}, "secrets": ["api_key"],
                "environment": {"DB_HOST": api_host, **pool}, "depends_on": [api_host]},
        "worker": {"image": "example/shop-worker:1",
                   "environment": {"DATABASE_URL": "postgresql://shop@pgbouncer:6432/shop", "DB_POOL_SIZE": "5",
                                   "DB_POOL_MAX_OVERFLOW": "5"}},
        "pgbouncer": bouncer,
        "db": {"image": "postgres:16", "environment": {"POSTGRES_DB": "shop"}},
    }, "secrets": {"api_key": {"file": "./secrets/api_key"}}}
    (root / "compose.yml").write_text(yaml.safe_dump(compose))
    (root / "stackproof.yml").write_text(yaml.safe_dump({"roles": {"postgres": "db", "api_services": ["api"]}}))
    return root


def fits_row(run) -> dict:
    return next(row for control in run.report["controls"] if control["id"] == "connection_pool"
                for row in control["checks"] if row["nodeid"].endswith("::test_pools_fit_postgres"))


def failed_pool_checks(run) -> set[str]:
    return {row["nodeid"].split("::")[1] for control in run.report["controls"] if control["id"] == "connection_pool"
            for row in control["checks"] if row["status"] == "FAIL"}


@pytest.mark.parametrize("how", ["ini", "edoburu-env", "bitnami-env"])
def test_pools_behind_pgbouncer_count_its_server_pool_not_theirs(tmp_path, run_static, how):
    """api 3 × 50 + worker 10 = 160 client connections, more than Postgres' 97: PgBouncer takes them all
    (max_client_conn 200) and opens 40 + 5 server connections, which fit. Its settings read from its ini file,
    from edoburu's variables, or from bitnami's."""
    settings = {"max_client_conn": 200, "default_pool_size": 40}
    stack = bouncer_stack(tmp_path / "stack", **{
        "ini": {"ini": settings},
        "edoburu-env": {"bouncer_env": {"MAX_CLIENT_CONN": "200", "DEFAULT_POOL_SIZE": "40", "RESERVE_POOL_SIZE": "5"}},
        "bitnami-env": {"bouncer_env": {"PGBOUNCER_MAX_CLIENT_CONN": "200", "PGBOUNCER_DEFAULT_POOL_SIZE": "40",
                                        "PGBOUNCER_RESERVE_POOL_SIZE": "5"}, "image": "bitnami/pgbouncer:1.23.1"},
    }[how])
    run = run_static(stack, "-k", "pool")
    row = fits_row(run)
    assert row["status"] == "PASS", row
    assert row["result"] == "pgbouncer 45 (default_pool_size 40 + reserve_pool_size 5) = 45", row["result"]
    assert failed_pool_checks(run) == set(), run.reasons("connection_pool")


def test_the_same_pools_straight_to_postgres_do_not_fit(tmp_path, run_static):
    """The API connecting to db itself: its three pools count against Postgres."""
    run = run_static(bouncer_stack(tmp_path / "stack", ini={"max_client_conn": 200, "default_pool_size": 40},
                                   api_host="db"), "-k", "pool")
    assert failed_pool_checks(run) == {"test_pools_fit_postgres"}
    assert "the pools need up to 195 connections (api 3 × 50 + pgbouncer 45 (default_pool_size 40 + " \
           "reserve_pool_size 5))" in fits_row(run)["reason"]


@pytest.mark.parametrize("ini, fragment", [
    ({"max_client_conn": 200, "default_pool_size": 100},
     "the pools need up to 105 connections (pgbouncer 105 (default_pool_size 100 + reserve_pool_size 5)) but db "
     "allows max_connections 100 - 3 reserved = 97"),
    ({"max_client_conn": 100, "default_pool_size": 40},
     "compose.yml: the pools behind PgBouncer need api 3 × 50 + worker 10 = 160 clients of pgbouncer, which takes "
     "max_client_conn 100 from pgbouncer/pgbouncer.ini"),
], ids=["server-pool-too-big", "too-few-clients"])
def test_a_pgbouncer_that_cannot_take_the_load_fails_naming_its_setting(tmp_path, run_static, ini, fragment):
    run = run_static(bouncer_stack(tmp_path / "stack", ini=ini), "-k", "pool")
    assert failed_pool_checks(run) == {"test_pools_fit_postgres"}
    assert fragment in fits_row(run)["reason"], fits_row(run)["reason"]


def test_a_pgbouncer_at_its_defaults_is_named_as_such(tmp_path, run_static):
    """No ini file, no variable: PgBouncer's defaults (max_client_conn 100) take fewer clients than 160."""
    run = run_static(bouncer_stack(tmp_path / "stack"), "-k", "pool")
    assert "which takes max_client_conn 100 from PgBouncer's default" in fits_row(run)["reason"]


@pytest.mark.parametrize("where", ["api-environment", "bouncer-ini"])
def test_a_number_past_ints_limit_is_a_finding_not_a_crash(tmp_path, run_static, where):
    """A pool size of 5,000 digits (Python's int() refuses more than 4,300): the pool check names it, no crash."""
    huge = "9" * 5000
    stack = bouncer_stack(tmp_path / "stack", ini={"max_client_conn": huge if where == "bouncer-ini" else 200,
                                                   "default_pool_size": 40})
    if where == "api-environment":
        compose = yaml.safe_load((stack / "compose.yml").read_text())
        compose["services"]["api"]["environment"]["DB_POOL_SIZE"] = huge
        (stack / "compose.yml").write_text(yaml.safe_dump(compose))
    run = run_static(stack, "-k", "pool")
    assert run.report is not None and run.ret == 1 and "INTERNALERROR" not in run.stdout, run.stdout[-2000:]
    reasons = " ".join(run.reasons("connection_pool"))
    assert "is not a" in reasons and huge not in reasons, reasons
