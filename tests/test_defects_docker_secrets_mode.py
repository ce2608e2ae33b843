"""Each defect of the Docker secrets mode control fails that control, and only it."""

import pytest
from defects import Defect, cases, per_stack
from harness import assert_only_control_fails

COMPOSE = "ai-stack/compose/docker-compose.yml"

# (id, text to replace in the compose file, replacement, fragments the failure reason must name)
DEFECTS = [
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


BOTH = [
    Defect("world-readable-mode", per_stack(
        reference=("compose", "source: stack_api_key\n        target: stack_api_key\n        uid: \"${STACK_UID}\"\n"
                              "        gid: \"${STACK_GID}\"\n        mode: 0400",
                   "source: stack_api_key\n        target: stack_api_key\n        uid: \"${STACK_UID}\"\n"
                   "        gid: \"${STACK_GID}\"\n        mode: 0444"),
        northwind=("compose", "source: api_token\n        target: api-token\n        mode: 0400",
                   "source: api_token\n        target: api-token\n        mode: 0444")),
        ("{compose}", "{api_service} → {api_key_secret} mode 0444")),
]


@pytest.mark.parametrize("layout_copy, defect", cases(BOTH), indirect=["layout_copy"])
def test_defect_fails_docker_secrets_mode_in_each_stack(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack), "docker_secrets_mode", *map(layout.fill, defect.fragments))
