"""Each defect of the Docker secrets mode control fails that control, and only it."""

import pytest
from harness import assert_only_control_fails

COMPOSE = "ai-stack/compose/docker-compose.yml"

# (id, text to replace in the compose file, replacement, fragments the failure reason must name)
DEFECTS = [
    (
        "world-readable-mode",
        "source: stack_api_key\n        target: stack_api_key\n        uid: \"${STACK_UID}\"\n        gid: \"${STACK_GID}\"\n        mode: 0400",
        "source: stack_api_key\n        target: stack_api_key\n        uid: \"${STACK_UID}\"\n        gid: \"${STACK_GID}\"\n        mode: 0444",
        ["docker-compose.yml", "stack_api_key mode 0444"],
    ),
    (
        "short-syntax",
        "    secrets:\n      - source: postgres_password\n        target: postgres_password\n        uid: \"${STACK_UID}\"\n        gid: \"${STACK_GID}\"\n        mode: 0400\n    volumes:\n      - pgdata",
        "    secrets:\n      - postgres_password\n    volumes:\n      - pgdata",
        ["postgres → postgres_password mode not declared"],
    ),
]


@pytest.mark.parametrize("old, new, fragments", [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_defect_fails_docker_secrets_mode(stack_copy, run_static, old, new, fragments):
    compose = stack_copy / COMPOSE
    text = compose.read_text()
    assert text.count(old) >= 1, "the reference compose file changed: update this defect"
    compose.write_text(text.replace(old, new, 1))
    assert_only_control_fails(run_static(stack_copy), "docker_secrets_mode", *fragments)
