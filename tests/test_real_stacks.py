"""Real stacks judged on their own terms: no reference-stack layout for a stack that does not have it,
the deployed compose file found by init, secrets known precisely (and only secrets redacted), the right
kind of outcome for the right cause (issue 14 items 1, 2, 4, 5; issue 17 class D)."""

from __future__ import annotations

import json
import os
import shutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import REFERENCE_NAMES, STACKS, assert_no_secret_in, merge_into_profile, report_texts

from stackproof.init import Inspector, api_key_name_rank, write_profile
from stackproof.resources.promql import duration_seconds
from stackproof.target.credentials import stack_secrets
from stackproof.target.profile import PROFILE_FILE

# names and paths only the reference stack has: a report on another stack never shows them
SECRETS = "ai-stack/compose/secrets"
COMPOSE = "ai-stack/compose/docker-compose.yml"


def rows(run) -> list[dict]:
    return [row for control in run.report["controls"] for row in control["checks"]]


# --- item 1: no reference defaults ------------------------------------------------------------


def _bare_root_compose(stack: Path) -> None:
    """A stack of one file: compose.yaml at the root (where Compose looks), nothing else."""
    (stack / "compose.yaml").write_text("services:\n  web:\n    image: nginx:1.27\n    ports: ['443:443']\n"
                                        "  db:\n    image: postgres:16\n")


def _northwind_compose_only(stack: Path) -> None:
    """northwind as checked out and set up, with a profile that names its compose file and env file only."""
    shutil.copytree(STACKS / "northwind", stack, dirs_exist_ok=True, symlinks=True)
    subprocess.run([str(stack / "bin/setup")], check=True, timeout=60, capture_output=True)
    (stack / PROFILE_FILE).write_text("paths:\n  compose: deploy/compose.yaml\ncompose:\n  env_files: [deploy/northwind.env]\n")


@pytest.mark.parametrize("make", [_bare_root_compose, _northwind_compose_only], ids=["root-compose", "northwind-partial-profile"])
def test_a_stack_without_profile_entries_is_never_judged_by_the_reference_layout(tmp_path, run_static, make):
    """Whatever the stack's profile does not name is NOT PROVEN, saying what the stack lacks and where the suite
    looked; no row names a file or secret of the reference stack, and no check fails about one."""
    stack = tmp_path / "stack"
    stack.mkdir()
    make(stack)
    run = run_static(stack)
    assert run.report is not None, run.stdout[-3000:]
    text = report_texts(run)
    assert not [name for name in REFERENCE_NAMES if name in text], [name for name in REFERENCE_NAMES if name in text]
    assert run.failed_gate
    lacking = [row["reason"] for row in rows(run) if row["reason"].startswith("not proven: ")]
    assert lacking and all("looked for" in reason for reason in lacking), lacking
    assert not [row for row in rows(run) if row["status"] == "PASS" and "not found" in row["result"]]


def test_a_stack_without_a_compose_file_where_compose_looks_is_a_usage_error_naming_where(tmp_path, run_static):
    """No profile and no compose file where Compose itself looks (northwind keeps it in deploy/): a usage error
    that says where the suite looked and to run init, never a reference path."""
    stack = tmp_path / "northwind"
    shutil.copytree(STACKS / "northwind", stack, symlinks=True)
    run = run_static(stack)
    assert run.report is None and run.ret != 0
    assert "no compose file: looked for paths.compose, COMPOSE_FILE in the stack dir's .env" in run.stderr, run.stderr
    assert "stackproof init" in run.stderr and not [name for name in REFERENCE_NAMES if name in run.stderr]


def test_an_unreadable_compose_model_is_the_one_root_cause(stack_copy, run_static):
    """A compose file that cannot be read is one target error, named first; every check that needs the model
    is 'blocked by the compose model', not failed or blocked by a check of another control."""
    (stack_copy / COMPOSE).write_text("services:\n  web:\n    image: [unclosed\n")
    run = run_static(stack_copy)
    [error] = run.report["target_errors"]
    assert error.startswith("the compose model cannot be read: ") and "docker-compose.yml" in error
    assert run.report["verdict"]["reason"].startswith("target error: the compose model cannot be read")
    blocked = [row["reason"] for row in rows(run) if row["reason"].startswith("blocked by ")]
    assert blocked and all(reason.startswith("blocked by the compose model: ") for reason in blocked
                           if "docker-compose.yml" in reason), blocked
    assert not [row for row in rows(run) if row["status"] == "FAIL" and "docker-compose.yml" in row["reason"]]


# --- item 5: right kind, right cause ----------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("0m", 0), ("0", 0), ("0s", 0), ("0h0m", 0), ("1m", 60), ("1h30m", 5400)])
def test_prometheus_durations_include_zero(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("bad", ["", "m", "5 minutes", "1x"])
def test_a_non_duration_is_refused(bad):
    with pytest.raises(ValueError):
        duration_seconds(bad)


def test_an_alert_for_zero_minutes_is_valid(stack_copy, run_static):
    rules = stack_copy / "ai-stack/compose/prometheus/alerts"
    target = next(path for path in sorted(rules.glob("*.yml")) if "for: " in path.read_text())
    text = target.read_text()
    first = next(line for line in text.splitlines() if line.strip().startswith("for: "))
    target.write_text(text.replace(first, first.split("for: ")[0] + "for: 0m", 1))
    run = run_static(stack_copy)
    assert "is not a duration" not in report_texts(run)
    assert run.statuses["alert_rules"] in ("PASS", "FAIL")  # judged; a failure may only be the rule's own tests
    assert not [r for r in run.reasons("alert_rules") if "0m" in r], run.reasons("alert_rules")


@pytest.mark.parametrize("where", ["removed", "never-generated"])
def test_a_key_file_that_does_not_exist_never_passes(stack_copy, run_static, where):
    """'not tracked by git' of a TLS key that is not there proves nothing: it fails naming the missing file."""
    key = stack_copy / "ai-stack/compose/nginx/certs/server.key"
    if where == "removed":
        key.unlink()
    else:
        merge_into_profile(stack_copy, "paths:\n  tls_key: ai-stack/compose/nginx/certs/live.key\n")
    run = run_static(stack_copy)
    row = next(r for r in rows(run) if r["nodeid"].endswith("::test_stack_key_not_tracked_by_git"))
    assert row["status"] == "FAIL" and "file not found" in row["reason"], row


def test_a_certificate_only_on_the_host_is_not_proven_statically(stack_copy, run_static):
    """A Let's Encrypt certificate lives on the production host, not in the repository: the static checks of the
    certificate are NOT PROVEN (the live ones read the served one), not failed."""
    merge_into_profile(stack_copy, "paths:\n  tls_cert: ''\n  tls_key: ''\n")
    run = run_static(stack_copy)
    cert_rows = [row for row in rows(run) if "Let's Encrypt" in row["reason"]]
    assert cert_rows and all(row["status"] == "SKIPPED" and row["reason"].startswith("not proven: ") for row in cert_rows)
    assert run.statuses["tls_monitoring"] == "NOT PROVEN", run.statuses
    assert "tls_monitoring" not in run.failed_controls


# --- item 2: init finds the deployed compose file -------------------------------------------

SERVICES = "services:\n  api:\n    image: api:1\n"


def _repo(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "repo"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("files, chosen, reason", [
    ({"deploy/docker-compose.dev.yml": SERVICES, "deploy/docker-compose.prod.yml": SERVICES,
      "docs/example/compose.yaml": SERVICES}, "deploy/docker-compose.prod.yml", "named for deployment (prod)"),
    ({"stack.yml": SERVICES, "notes.yml": "items: [1]\n"}, "stack.yml", "the only compose file"),
    ({".env": "COMPOSE_FILE=infra/base.yml:infra/live.yml\n", "infra/base.yml": SERVICES, "infra/live.yml": SERVICES,
      "docker-compose.yml": SERVICES}, "infra/base.yml", "COMPOSE_FILE"),
    ({"Makefile": "up:\n\tdocker compose -f compose/base.yaml -f compose/gpu.yaml up -d\n",
      "compose/base.yaml": SERVICES, "compose/gpu.yaml": SERVICES, "compose/dev.yaml": SERVICES},
     "compose/base.yaml", "Makefile runs docker compose"),
    ({"bin/deploy.sh": "#!/bin/sh\nexec docker-compose --file ops/ai.yml up -d\n", "ops/ai.yml": SERVICES,
      "docker-compose.yml": SERVICES}, "ops/ai.yml", "bin/deploy.sh runs docker compose"),
    ({"Makefile": "dev:\n\tdocker compose -f compose/base.yml -f compose/dev.yml up\n",
      "scripts/deploy.sh": "#!/bin/sh\nexec docker compose --env-file compose/.env \\\n  -f compose/base.yml -f compose/prod.yml up -d\n",
      "compose/base.yml": SERVICES, "compose/dev.yml": SERVICES, "compose/prod.yml": SERVICES},
     "compose/base.yml", "scripts/deploy.sh runs docker compose with -f compose/base.yml -f compose/prod.yml"),
    ({"deploy/README.md": "From this directory run `docker compose up -d`.\n", "deploy/docker-compose.yml": SERVICES,
      "deploy/docker-compose.prod.yml": SERVICES, "deploy/docker-compose.dev.yml": SERVICES},
     "deploy/docker-compose.yml", "deploy/README.md runs `docker compose up` in its own dir, with no -f"),
    ({"AGENTS.md": "Bring it up with `docker compose up -d`.\n", "compose.yml": SERVICES,
      "README.md": "docker compose -f compose/base.yml -f compose/app.yml config > /tmp/all.yml\n",
      "compose/base.yml": SERVICES, "compose/app.yml": SERVICES},
     "compose/base.yml", "README.md runs docker compose with -f compose/base.yml -f compose/app.yml"),
], ids=["prod-over-dev", "any-name-by-content", "compose-file-variable", "makefile-f-set", "wrapper-script",
        "deploy-script-over-makefile-dev", "docs-up-without-f", "docs-f-set-over-a-default-file"])
def test_init_picks_the_deployed_compose_file(tmp_path, files, chosen, reason):
    root = _repo(tmp_path, files)
    inspector = Inspector(root)
    inspector.compose_file()
    [entry] = [e for e in inspector.found.entries if e.key == "compose"]
    assert entry.value == chosen and reason in entry.how, entry
    others = [f for f in files if files[f] == SERVICES and f != chosen]
    assert all(other in entry.how for other in others), entry.how  # the reason lists every other compose file


def test_init_keeps_the_users_compose_choice_and_names_one_root_cause_once(tmp_path):
    root = _repo(tmp_path, {"a/docker-compose.yml": SERVICES, "b/odd.yml": SERVICES})
    (root / PROFILE_FILE).write_text("paths:\n  compose: b/odd.yml\n")
    write_profile(root, force=True)
    assert yaml.safe_load((root / PROFILE_FILE).read_text())["paths"]["compose"] == "b/odd.yml"
    write_profile(root, force=True, compose="a/docker-compose.yml")
    assert yaml.safe_load((root / PROFILE_FILE).read_text())["paths"]["compose"] == "a/docker-compose.yml"
    empty = _repo(tmp_path / "none", {"README.md": "no compose here\n"})
    findings = Inspector(empty).inspect()
    assert len([todo for todo in findings.todos if "no compose file" in todo]) == 1, findings.todos


def test_init_rerun_keeps_what_the_user_set_and_rediscovers_the_rest(stack_copy):
    """A re-run (--force) keeps every entry the user changed or added, with no TODO about it, and rediscovers the
    entries init wrote: a stack change shows in them. A profile init did not write (no record) keeps the compose
    set only, as before."""
    write_profile(stack_copy, force=True)
    text = (stack_copy / PROFILE_FILE).read_text()
    assert text.rstrip().splitlines()[-1].startswith("# stackproof init wrote: {")
    profile = yaml.safe_load(text)
    assert profile["api_key"]["secret"] == "stack_api_key"
    # the user answers by hand: another API key secret, and a rotate interface of their own
    text = text.replace('secret: "stack_api_key"', 'secret: "other_key"')
    text = re.sub(r"(?m)^  rotate: .*$", '  rotate: {"command": ["{script}", "--name", "{key_name}"]}', text)
    (stack_copy / PROFILE_FILE).write_text(text)
    # and the stack changes under init's own entries: the pool config moves
    old_pool = profile["paths"]["pool_config"]
    (stack_copy / old_pool).rename(stack_copy / (old_pool + ".moved.yaml"))
    _, findings = write_profile(stack_copy, force=True)
    rewritten = (stack_copy / PROFILE_FILE).read_text()
    again = yaml.safe_load(rewritten)
    assert again["api_key"]["secret"] == "other_key"
    assert again["scripts"]["rotate"]["command"] == ["{script}", "--name", "{key_name}"]
    assert "kept from the previous stackproof.yml: set by you (init does not overwrite it)" in rewritten
    assert not any(todo.startswith(("api_key.secret", "scripts.rotate")) for todo in findings.todos), findings.todos
    assert again["paths"]["pool_config"] != old_pool  # init's own entry, rediscovered
    # a third run still keeps them: a kept entry is never recorded as init's
    write_profile(stack_copy, force=True)
    assert yaml.safe_load((stack_copy / PROFILE_FILE).read_text())["api_key"]["secret"] == "other_key"
    # no record: only the compose set is kept
    (stack_copy / PROFILE_FILE).write_text('api_key:\n  secret: "other_key"\n')
    write_profile(stack_copy, force=True)
    assert yaml.safe_load((stack_copy / PROFILE_FILE).read_text())["api_key"]["secret"] == "stack_api_key"


def test_init_command_takes_compose(tmp_path):
    root = _repo(tmp_path, {"x/one.yml": SERVICES, "y/two.yml": SERVICES})
    done = subprocess.run([sys.executable, "-m", "stackproof.init", "--stack-dir", str(root), "--compose", "y/two.yml"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load((root / PROFILE_FILE).read_text())["paths"]["compose"] == "y/two.yml"


# --- item 4 and issue 17 class D: secrets precisely ------------------------------------------

TOKEN = "Zz9-vault-token-8f3KqP2mW7xR"


def test_secrets_are_the_values_a_stack_keeps_secret(tmp_path):
    """Secret files (the secrets dir's and any compose secret's), credentials in env files and env_file; not a
    README, a template, a URL without a password, a flag, a cookie attribute or a host name."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/README.md").write_text("Put the API key here: openssl rand -hex 32 > api_key\n")
    (tmp_path / "secrets/api_key.example").write_text("replace-me-with-a-real-key-0000\n")
    (tmp_path / "secrets/api_key").write_text("a" * 8 + "Kq83mZ0x7Wp2Lr5T\n")
    (tmp_path / "vault").mkdir()
    (tmp_path / "vault/extra_token").write_text(TOKEN + "\n")
    (tmp_path / "app.env").write_text("SERVICE_TOKEN=Yy7-env-file-token-22ab91\nAUTH_URL_BASE=https://auth.example.org\n"
                                      "AUTH_COOKIE_SAMESITE=lax\nAUTH_ENABLED=true\nAUTH_HOST=auth.example.org\n")
    (tmp_path / "compose.yml").write_text(
        "services:\n  app:\n    image: a\n    env_file: [app.env]\n    environment:\n"
        "      OAUTH_ISSUER_AUTH: https://id.example.com/realms/x\n      SESSION_SECRET_TTL: 30m\n"
        "secrets:\n  extra:\n    file: vault/extra_token\n  outside:\n    file: /etc/hostname\n")
    found = {s.value for s in stack_secrets(tmp_path, tmp_path / "secrets", [tmp_path / "compose.yml"], [])}
    assert found == {"a" * 8 + "Kq83mZ0x7Wp2Lr5T", TOKEN, "Yy7-env-file-token-22ab91"}, found


def test_only_secret_values_are_redacted(stack_copy, run_static):
    """A secrets dir that holds a README and an *.example template written in the report's own words (service names,
    paths, stackproof's phrases): nothing but secrets is redacted, so the GO report has no redaction at all."""
    words = ("aidb hybrid-coordinator nginx postgres prometheus alertmanager node-exporter tls-monitor\n"
             "ai-stack/compose/docker-compose.yml compose model read by docker compose config\n"
             "every P0 control passed secret file mode api key permissions connection pool\n")
    (stack_copy / SECRETS / "README.md").write_text(words)
    (stack_copy / SECRETS / "stack_api_key.example").write_text(words)
    run = run_static(stack_copy)
    assert run.passed, {c: run.reasons(c) for c in run.failed_controls}
    assert report_texts(run).count("[redacted") == 0


@pytest.mark.parametrize("form", ["secrets-dir-empty", "secret-kept-elsewhere"])
def test_compose_quoting_a_secret_never_shows_it(stack_copy, run_static, form):
    """Issue 17 class D: Compose's own parse error quotes a compose secret's file that lives outside the declared
    secrets dir (an empty dir named by the profile, or a folder of its own): it is learned, so never shown."""
    vault = stack_copy / ("ai-stack/compose/secrets" if form == "secrets-dir-empty" else "ops/vault")
    vault.mkdir(parents=True, exist_ok=True)
    secret = vault / "extra_token"
    secret.write_text(('"' if form == "secrets-dir-empty" else "@") + TOKEN + "\n")
    secret.chmod(0o400)
    if form == "secrets-dir-empty":
        (stack_copy / "ai-stack/empty").mkdir()
        merge_into_profile(stack_copy, "paths:\n  secrets_dir: ai-stack/empty\n")
    compose = stack_copy / COMPOSE
    relative = os.path.relpath(secret, compose.parent)
    doc = yaml.safe_load(compose.read_text())
    doc["secrets"]["extra_token"] = {"file": relative}
    first = next(iter(doc["services"]))
    doc["services"][first]["env_file"] = [relative]
    compose.write_text(yaml.safe_dump(doc, sort_keys=False))
    run = run_static(stack_copy)
    assert run.report is not None, run.stdout[-3000:]
    assert_no_secret_in(run, [TOKEN.encode()])
    assert run.failed_gate
    assert json.dumps(run.report).count("extra_token") >= 1  # the error is still explained, the value scrubbed


PROXIED = {
    "docker-compose.yml": """services:
  proxy:
    image: nginx:1.27
    environment: {BACKEND_HOST: api}
    volumes: ["./nginx:/etc/nginx/conf.d:ro"]
  api:
    image: example/api:1
    depends_on: [db]
  worker:
    image: example/api:1
    environment: {DATABASE_URL: "postgresql://db:5432/app"}
  web:
    image: example/web:1
  db:
    image: postgres:16
    environment: {POSTGRES_PASSWORD_FILE: /run/secrets/pw}
""",
    "nginx/app.conf": """upstream backend { server ${BACKEND_HOST}:8080 fail_timeout=0; }
server {
  listen 80;
  location /api/ { proxy_pass http://backend; }
  location / { proxy_pass http://web:3000; }
}
""",
}


def test_without_an_api_key_secret_the_api_services_are_those_the_proxy_sends_to_that_use_the_database(tmp_path):
    """No file secret tells the API services apart: they are the services nginx proxies to (an upstream whose server
    comes from nginx's environment, a proxy_pass), those of them that use the database; not the web front end,
    not a worker nginx never reaches."""
    findings = Inspector(_repo(tmp_path, PROXIED)).inspect()
    [entry] = [e for e in findings.entries if (e.section, e.key) == ("roles", "api_services")]
    assert entry.value == ["api"] and "proxy proxies to them" in entry.how, entry


@pytest.mark.parametrize("better, worse", [
    ("litellm_master_key", "redis_password"), ("stack_api_key", "postgres_exporter_dsn"),
    ("watchtower_api_token", "searxng_secret_key"), ("signing_key", "slack_alert_webhook_url"),
    ("openai_api_key", "db_pass"),
])
def test_a_secret_named_as_an_api_key_outranks_a_password_however_often_mounted(better, worse):
    """init's choice of the API key among a stack's file secrets: its name first (an API or master key, a token;
    never a password, DSN or URL), the number of services mounting it only between equals."""
    assert api_key_name_rank(better) > api_key_name_rank(worse)


def test_init_takes_the_database_clients_that_serve_a_port_as_api_services_with_a_todo(tmp_path):
    """No API key secret and no reverse proxy (a development-style stack): the services that use the database and
    serve a port are the API services, with a TODO to check; a worker that serves nothing is not one."""
    root = _repo(tmp_path, {"docker-compose.yml": (
        "services:\n  db:\n    image: postgres:16\n"
        "  server:\n    image: example/app:1\n    ports: ['42110:42110']\n    depends_on: [db]\n"
        "  worker:\n    image: example/app:1\n    environment:\n      POSTGRES_HOST: db\n"
        "  search:\n    image: example/search:1\n    ports: ['8080:8080']\n")})
    _, findings = write_profile(root)
    entry = next(e for e in findings.entries if (e.section, e.key) == ("roles", "api_services"))
    assert entry.value == ["server"], entry
    assert any(todo.startswith("roles.api_services: server taken as the API services") for todo in findings.todos)
