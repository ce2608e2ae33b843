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
