"""Each defect of the connection pool control fails that control, and only it."""

import pytest
from defects import Defect, cases, edit_yaml, per_stack, remove_file
from harness import assert_only_control_fails

CONFIG = "ai-stack/mcp-servers/config/config.yaml"
COMPOSE = "ai-stack/compose/docker-compose.yml"
POOL = "      size: 20\n      max_overflow: 30\n      timeout: 30          # seconds to wait for a connection\n"

# (id, file, text to replace, replacement, fragments the failure reason must name)
DEFECTS = [
    (
        "max-overflow-10", CONFIG, "      max_overflow: 30\n", "      max_overflow: 10\n",
        ["config.yaml: database.postgres.pool.max_overflow is 10"],
    ),
    (
        "no-timeout", CONFIG, "      timeout: 30          # seconds to wait for a connection\n", "",
        ["config.yaml: database.postgres.pool.timeout is not set"],
    ),
    (
        "size-not-an-integer", CONFIG, "      size: 20\n", "      size: twenty\n",
        ["config.yaml: database.postgres.pool.size: 'twenty' is not an integer"],
    ),
    (
        # each replica holds its own pool: 3 × 50 + 50 = 200 > 197
        "aidb-scaled-to-3", COMPOSE, "\n  aidb:\n", "\n  aidb:\n    scale: 3\n",
        ["the pools need up to 200 connections (aidb 3 × 50 + hybrid-coordinator 50)", "= 197"],
    ),
    (
        "malformed-yaml", CONFIG, POOL, "      size: 20\n     max_overflow: [30\n",
        ["ai-stack/mcp-servers/config/config.yaml: line", "invalid YAML"],
    ),
]


@pytest.mark.parametrize("path, old, new, fragments", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_defect_fails_connection_pool(stack_copy, run_static, path, old, new, fragments):
    target = stack_copy / path
    if old is None:
        target.unlink()
    else:
        text = target.read_text()
        assert old in text, f"the reference {path} changed: update this defect"
        target.write_text(text.replace(old, new, 1))
    assert_only_control_fails(run_static(stack_copy), "connection_pool", *fragments)


# Defects of both test stacks (tests/defects.py layouts): the same fact broken in each house style.
BOTH = [
    Defect("size-5", edit_yaml("pool_config", "database.postgres.pool.size", 5),
           ("{pool_config}: database.postgres.pool.size is 5",)),
    Defect("pre-ping-off", edit_yaml("pool_config", "database.postgres.pool.pre_ping", False),
           ("{pool_config}: database.postgres.pool.pre_ping is False",)),
    Defect("env-override", per_stack(
        reference=("compose", "      SERVICE_NAME: aidb\n", "      SERVICE_NAME: aidb\n      DB_POOL_SIZE: \"5\"\n"),
        northwind=("compose", "      DB_HOST: db\n", "      DB_HOST: db\n      DB_POOL_SIZE: \"5\"\n")),
        ("{compose}: pool too small for {api_service}: size 5", "DB_POOL_SIZE=5")),
    Defect("max-connections-60", per_stack(
        reference=("compose", "      - max_connections=200\n", "      - max_connections=60\n"),
        northwind=("compose", '"max_connections=150"', '"max_connections=60"')),
        ("the pools need up to", "max_connections 60 - 3 reserved = 57")),
    Defect("config-missing", remove_file("pool_config"), ("{pool_config}: file not found",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(BOTH), indirect=["layout_copy"])
def test_defect_fails_connection_pool_in_each_stack(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack, *defect.args), "connection_pool", *map(layout.fill, defect.fragments))


# --- the effective Postgres settings: every source the server reads (stackproof/target/postgres.py) ----

PG_CONF = "/etc/postgresql/postgresql.conf"


def postgres_config(conf: str, extra: dict[str, str], command: dict[str, tuple[str, str]]):
    """A postgresql.conf (and the files it includes, `extra`: path relative to it -> text) mounted into the
    postgres service at PG_CONF and named by `-c config_file`, with the command edited per stack
    (`command`: stack -> (old, new))."""

    def inject(stack, layout):
        compose = stack / layout.compose
        conf_dir = compose.parent / "pgconf"
        conf_dir.mkdir()
        (conf_dir / "postgresql.conf").write_text(conf)
        for relative, text in extra.items():
            (conf_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (conf_dir / relative).write_text(text)
        old, new = command[layout.name]
        text = compose.read_text()
        assert old in text, f"the reference {layout.compose} changed: update this defect"
        text = text.replace(old, new, 1)
        service = "\n  postgres:\n" if layout.name == "reference" else "\n  db:\n"
        volumes = text.index("    volumes:\n", text.index(service)) + len("    volumes:\n")
        compose.write_text(text[:volumes] + "      - ./pgconf:/etc/postgresql:ro\n" + text[volumes:])

    return inject


def postgres_config_instead_of_flag(conf: str, extra: dict[str, str] | None = None):
    """The stack's `-c max_connections=N` replaced by `-c config_file=PG_CONF` (see postgres_config)."""
    return postgres_config(conf, extra or {}, {
        "reference": ("      - max_connections=200\n", f"      - config_file={PG_CONF}\n"),
        "northwind": ('"max_connections=150"', f'"config_file={PG_CONF}"'),
    })


def client_env(variable: str, value: str):
    """A variable added to the API service's environment in each stack."""
    return per_stack(
        reference=("compose", "      SERVICE_NAME: aidb\n", f"      SERVICE_NAME: aidb\n      {variable}: \"{value}\"\n"),
        northwind=("compose", "      DB_HOST: db\n", f"      DB_HOST: db\n      {variable}: \"{value}\"\n"))


SOURCES = [
    # a short flag after -c on the command line: the last one wins
    Defect("short-flag-N-after-c", per_stack(
        reference=("compose", "      - max_connections=200\n", "      - max_connections=200\n      - -N\n      - \"60\"\n"),
        northwind=("compose", '"max_connections=150"', '"max_connections=150", "-N60"')),
        ("max_connections 60 - 3 reserved = 57", "{compose}: ", "command -N")),
    # the long form, again after -c
    Defect("long-option-after-c", per_stack(
        reference=("compose", "      - max_connections=200\n", "      - max_connections=200\n      - --max-connections=60\n"),
        northwind=("compose", '"max_connections=150"', '"max_connections=150", "--max_connections=60"')),
        ("max_connections 60 - 3 reserved = 57", "command --")),
    # postgresql.conf says enough, a file of its include_dir (read after it) lowers it
    Defect("include-dir-overrides-conf", postgres_config_instead_of_flag(
        "max_connections = 200\ninclude_dir 'conf.d'\n",
        {"conf.d/10-tuning.conf": "# tuning\nmax_connections = 60   # fewer, bigger\n"}),
        ("max_connections 60 - 3 reserved = 57", "pgconf/conf.d/10-tuning.conf:2")),
    # an include_if_exists file after the setting, with the value quoted
    Defect("include-if-exists-overrides-conf", postgres_config_instead_of_flag(
        "max_connections 200\nsuperuser_reserved_connections = 3\ninclude_if_exists = 'local.conf'\n",
        {"local.conf": "max_connections = '60'\n"}),
        ("max_connections 60 - 3 reserved = 57", "pgconf/local.conf:1")),
    # the reserved connections raised in a config file (the command line does not set them)
    Defect("reserved-raised-in-conf", postgres_config(
        "superuser_reserved_connections = 120\n", {},
        {"reference": ("      - superuser_reserved_connections=3\n", f"      - config_file={PG_CONF}\n"),
         "northwind": ('"superuser_reserved_connections=3"', f'"config_file={PG_CONF}"')}),
        ("120 reserved = ", "superuser_reserved_connections from ", "pgconf/postgresql.conf:1")),
]


@pytest.mark.parametrize("layout_copy, defect", cases(SOURCES), indirect=["layout_copy"])
def test_overriding_postgres_source_fails_connection_pool(layout_copy, run_static, defect):
    """Each source Postgres reads can lower max_connections, and the reason names the one that won."""
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack), "connection_pool", *map(layout.fill, defect.fragments))


@pytest.mark.parametrize("layout_copy", ["reference", "northwind"], indirect=True)
def test_max_connections_from_config_file_passes(layout_copy, run_static):
    """A stack that sets max_connections in its postgresql.conf instead of the command line is as correct."""
    stack, layout = layout_copy
    postgres_config_instead_of_flag("max_connections = 200\n")(stack, layout)
    run = run_static(stack)
    assert run.failed_controls == set(), {c: run.reasons(c) for c in run.failed_controls}


CLIENT_OPTIONS = [
    Defect("pgoptions-c", client_env("PGOPTIONS", "-c max_connections=500"),
           ("service {api_service}: PGOPTIONS sets max_connections",)),
    Defect("pgoptions-long", client_env("PGOPTIONS", "--shared_buffers=1GB -c statement_timeout=5s"),
           ("service {api_service}: PGOPTIONS sets shared_buffers",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(CLIENT_OPTIONS), indirect=["layout_copy"])
def test_client_pgoptions_fails_connection_pool(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack), "connection_pool", *map(layout.fill, defect.fragments))


def test_pool_override_in_an_env_file_names_the_env_file(stack_copy, run_static):
    """A DB_POOL_SIZE the service gets from its `env_file`: the failure names that env file, where the value is
    written, not the compose file."""
    compose = stack_copy / COMPOSE
    (compose.parent / "pool.env").write_text("# the pool of aidb\nDB_POOL_SIZE=5\n")
    text = compose.read_text()
    old = "    environment:\n      AI_STACK_CONFIG: /etc/ai-stack/config.yaml\n      SERVICE_NAME: aidb\n"
    assert old in text, f"the reference {COMPOSE} changed: update this test"
    compose.write_text(text.replace(old, "    env_file: [pool.env]\n" + old, 1))
    assert_only_control_fails(run_static(stack_copy), "connection_pool",
                              "ai-stack/compose/pool.env: pool too small for aidb: size 5", "DB_POOL_SIZE=5")
