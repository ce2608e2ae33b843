"""A pool config baked into an image (stackproof/target/dockerfile.py): the Dockerfile's COPY/ADD from the build
context puts it in the service's image, so that service reads it although no volume mounts it; a copy from
another stage, or from outside the context, does not count."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stackproof.redact import Redactor
from stackproof.target.dockerfile import image_copies
from stackproof.target.stack import Stack

POOL = {"database": {"postgres": {"pool": {"size": 25, "max_overflow": 35, "timeout": 30, "pre_ping": True}}}}


def baked_stack(root: Path, dockerfile: str, pool: dict = POOL) -> Path:
    (root / "api/config").mkdir(parents=True)
    (root / "api/config/settings.yaml").write_text(yaml.safe_dump(pool))
    (root / "api/Dockerfile").write_text(dockerfile)
    (root / "secrets").mkdir(mode=0o700)
    (root / "secrets/api_key").write_text("5c3a" * 16 + "\n")
    (root / "compose.yml").write_text(yaml.safe_dump({"services": {
        "api": {"build": {"context": "./api"}, "depends_on": ["db"], "secrets": ["api_key"]},
        "db": {"image": "postgres:16"}}, "secrets": {"api_key": {"file": "./secrets/api_key"}}}))
    (root / "stackproof.yml").write_text(yaml.safe_dump({"roles": {"postgres": "db", "api_services": ["api"]},
                                                        "paths": {"pool_config": "api/config/settings.yaml"}}))
    return root


@pytest.mark.parametrize("dockerfile, target", [
    ("FROM python:3.12\nWORKDIR /srv\nCOPY config/settings.yaml ./settings.yaml\n", "/srv/settings.yaml"),
    ("FROM python:3.12\nCOPY --chown=app:app config/ /etc/api/\n", "/etc/api/settings.yaml"),
    ('FROM python:3.12\nADD ["config/settings.yaml", "app.py", \\\n     "/app/"]\n', "/app/settings.yaml"),
    ("FROM python:3.12\nCOPY . /app\n", "/app/config/settings.yaml"),
    ("FROM python:3.12 AS build\nCOPY config /build/config\nFROM python:3.12-slim\n"
     "COPY --from=build /build/config /etc/api\n", "/etc/api/settings.yaml"),
], ids=["workdir-relative", "dir-with-flag", "json-form-continued", "whole-context", "through-a-build-stage"])
def test_the_image_path_of_a_baked_config(tmp_path, dockerfile, target):
    stack = Stack(baked_stack(tmp_path / "stack", dockerfile), 20, Redactor())
    service = stack.compose.services["api"]
    landed = [copy.image_path_of(stack.root / "api/config/settings.yaml") for copy in image_copies(stack, service)]
    assert target in landed, landed


def pool_rows(run) -> dict[str, dict]:
    return {row["nodeid"].split("::")[1]: row for control in run.report["controls"] if control["id"] == "connection_pool"
            for row in control["checks"]}


def test_a_config_baked_into_the_image_is_the_services_pool(tmp_path, run_static):
    """Read by the service whose Dockerfile copies it: its pool is judged (and passes), with no volume."""
    stack = baked_stack(tmp_path / "stack", "FROM python:3.12\nWORKDIR /srv\nCOPY config ./config\n")
    rows = pool_rows(run_static(stack, "-k", "pool"))
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(rows, "PASS"), rows
    assert "api: size 25, overflow 35, max 60" in rows["test_effective_pool_per_service"]["result"]


@pytest.mark.parametrize("dockerfile", [
    "FROM python:3.12 AS build\nCOPY config /build/config\nFROM python:3.12\nCOPY --from=build /build/app /app\n",
    "FROM python:3.12\nCOPY app.py /app/\n",
], ids=["only-another-stage", "not-copied"])
def test_a_config_the_image_does_not_hold_is_read_by_no_service(tmp_path, run_static, dockerfile):
    """The final image holds no copy of it (a builder stage's is not in it; or it is never copied): no service reads
    it, and the pool checks say so instead of judging a file nothing reads."""
    rows = pool_rows(run_static(baked_stack(tmp_path / "stack", dockerfile), "-k", "pool_per_service"))
    assert "no service reads the pool config api/config/settings.yaml" in rows["test_effective_pool_per_service"]["reason"]
