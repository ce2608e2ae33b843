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


def test_a_mode_set_in_an_override_file_is_named_there(stack_copy, run_static):
    """Compose replaces a secret's entry with the override file's: the reason names the override file, where the
    fix goes, not the main file that still says 0400."""
    (stack_copy / "ai-stack/compose/docker-compose.override.yml").write_text(
        "services:\n  aidb:\n    secrets:\n      - {source: stack_api_key, target: stack_api_key, mode: 0444}\n")
    run = run_static(stack_copy)
    assert_only_control_fails(run, "docker_secrets_mode",
                              "ai-stack/compose/docker-compose.override.yml: secret mode is not 0400: aidb → stack_api_key mode 0444")
    assert f"{COMPOSE}: secret mode" not in " ".join(run.reasons("docker_secrets_mode"))


@pytest.mark.parametrize("layout_copy, defect", cases(BOTH), indirect=["layout_copy"])
def test_defect_fails_docker_secrets_mode_in_each_stack(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack), "docker_secrets_mode", *map(layout.fill, defect.fragments))


# --- credentials in the open (stackproof/target/open_credentials.py) ------------------------------------

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from defects import Layout  # noqa: E402

LITERAL = "Qm7vT2xK9pLw4Zr8Yd3n"  # a strong value: only its place is wrong, not its strength
SERVICE_LINE = {"reference": "      SERVICE_NAME: aidb\n", "northwind": "      DB_HOST: db\n"}
ENV_FILE = {"reference": "ai-stack/compose/.env", "northwind": "deploy/northwind.env"}


# the variable each stack's secret for the database password is named after
DB_VARIABLE = {"reference": "POSTGRES_PASSWORD", "northwind": "DB_PASSWORD"}


def in_environment(line: str):
    """A line added to the API service's `environment:` in each stack ({var}: the stack's DB_VARIABLE)."""
    return per_stack(**{name: ("compose", anchor, anchor + line.format(var=DB_VARIABLE[name]))
                        for name, anchor in SERVICE_LINE.items()})


def env_file_of(service: str, variable: str, value_of=lambda stack, layout: LITERAL):
    """The stack's `service` (by layout field) given an env_file that sets `variable` to a literal."""

    def inject(stack: Path, layout: Layout) -> None:
        compose = stack / layout.compose
        (compose.parent / "credentials.env").write_text(f"{variable}={value_of(stack, layout)}\n")
        name = getattr(layout, service, service)
        text = compose.read_text()
        header = f"\n  {name}:\n"
        assert header in text, f"the {layout.name} compose file changed: update this defect"
        compose.write_text(text.replace(header, header + "    env_file: ./credentials.env\n", 1))

    return inject


def db_password_of(stack: Path, layout: Layout) -> str:
    return (stack / layout.db_password).read_text().strip()


def committed_env(stack: Path, layout: Layout) -> None:
    """The project's .env, committed, holds the password a service's environment takes through ${DB_PASSWORD}."""
    with (stack / ENV_FILE[layout.name]).open("a") as env:
        env.write(f"DB_PASSWORD={LITERAL}\n")
    in_environment("      {var}: ${{DB_PASSWORD}}\n")(stack, layout)
    for cmd in (["git", "init", "-q"], ["git", "add", "-f", ENV_FILE[layout.name]]):
        subprocess.run(cmd, cwd=stack, check=True, timeout=30, capture_output=True)


OPEN = [
    Defect("literal-in-environment-named-like-a-secret", in_environment("      {var}: \"" + LITERAL + "\"\n"),
           ("{compose}: service {api_service} environment: ", "is a literal (the stack has a secret")),
    Defect("literal-default-in-reference", in_environment("      {var}: ${{DB_PASSWORD:-" + LITERAL + "}}\n"),
           ("service {api_service} environment: ", "PASSWORD is a literal")),
    Defect("secret-value-in-env-file", env_file_of("api_service", "DATABASE_SECRET", db_password_of),
           ("credentials.env (env_file of service {api_service}): DATABASE_SECRET", "holds the same value")),
    Defect("committed-env-referenced", committed_env,
           ("(committed): DB_PASSWORD is a literal",)),
]


@pytest.mark.parametrize("layout_copy, defect", cases(OPEN), indirect=["layout_copy"])
def test_credential_in_the_open_fails_docker_secrets_mode(layout_copy, run_static, defect):
    stack, layout = layout_copy
    defect.inject(stack, layout)
    assert_only_control_fails(run_static(stack), "docker_secrets_mode", *map(layout.fill, defect.fragments))


def test_image_file_variant_fails_docker_secrets_mode(prepared_stacks, tmp_path, run_static):
    """northwind's db runs the official postgres image, which reads POSTGRES_PASSWORD_FILE: a literal
    POSTGRES_PASSWORD in an env_file is a secret it could have had as a file (no secret is named after it)."""
    import shutil
    stack = tmp_path / "northwind"
    shutil.copytree(prepared_stacks["northwind"], stack, symlinks=True)
    from defects import NORTHWIND
    env_file_of("db", "POSTGRES_PASSWORD")(stack, NORTHWIND)
    assert_only_control_fails(run_static(stack), "docker_secrets_mode",
                              "env_file of service db): POSTGRES_PASSWORD", "image postgres:16-bookworm reads POSTGRES_PASSWORD_FILE")


@pytest.mark.parametrize("layout_copy", ["reference", "northwind"], indirect=True)
def test_reference_to_uncommitted_env_passes(layout_copy, run_static):
    """The same ${DB_PASSWORD} from a .env that is not committed: the environment Compose runs in."""
    stack, layout = layout_copy
    with (stack / ENV_FILE[layout.name]).open("a") as env:
        env.write(f"DB_PASSWORD={LITERAL}\n")
    in_environment("      {var}: ${{DB_PASSWORD}}\n")(stack, layout)
    run = run_static(stack)
    assert run.failed_controls == set(), {c: run.reasons(c) for c in run.failed_controls}
