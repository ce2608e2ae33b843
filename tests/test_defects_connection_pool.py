"""Each defect of the connection pool control fails that control, and only it."""

import pytest
from harness import assert_only_control_fails

CONFIG = "ai-stack/mcp-servers/config/config.yaml"
COMPOSE = "ai-stack/compose/docker-compose.yml"
POOL = "      size: 20\n      max_overflow: 30\n      timeout: 30          # seconds to wait for a connection\n"

# (id, file, text to replace, replacement, fragments the failure reason must name)
DEFECTS = [
    ("size-5", CONFIG, "      size: 20\n", "      size: 5\n", ["config.yaml: database.postgres.pool.size is 5"]),
    (
        "max-overflow-10", CONFIG, "      max_overflow: 30\n", "      max_overflow: 10\n",
        ["config.yaml: database.postgres.pool.max_overflow is 10"],
    ),
    (
        "pre-ping-off", CONFIG, "      pre_ping: true\n", "      pre_ping: false\n",
        ["config.yaml: database.postgres.pool.pre_ping is False"],
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
        "env-override-aidb", COMPOSE, "      SERVICE_NAME: aidb\n", "      SERVICE_NAME: aidb\n      DB_POOL_SIZE: \"5\"\n",
        ["docker-compose.yml: pool too small for aidb: size 5", "DB_POOL_SIZE=5"],
    ),
    (
        "max-connections-60", COMPOSE, "      - max_connections=200\n", "      - max_connections=60\n",
        ["need up to 100 connections", "max_connections 60 - 3 reserved = 57"],
    ),
    (
        "malformed-yaml", CONFIG, POOL, "      size: 20\n     max_overflow: [30\n",
        ["ai-stack/mcp-servers/config/config.yaml: line", "invalid YAML"],
    ),
    ("config-missing", CONFIG, None, None, ["ai-stack/mcp-servers/config/config.yaml: file not found"]),
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
