"""Breakers declared in code (stackproof/resources/breaker_code.py): read with ast from the libraries' calls,
a hand-written class's defaults and the state encoding the code states; the code is never run."""

from __future__ import annotations

from pathlib import Path
from string import Template

import pytest
import yaml
from test_pool_libraries import gateway_stack

from stackproof.errors import NotDeclared
from stackproof.redact import Redactor
from stackproof.resources.breaker_code import read_breaker_code
from stackproof.resources.breakers import declared_breakers
from stackproof.target.stack import Stack


def code_of(tmp_path: Path, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    stack = Stack(tmp_path, 20, Redactor())
    return read_breaker_code(stack, tmp_path)


@pytest.mark.parametrize("source, settings", [
    ("import pybreaker\ndb = pybreaker.CircuitBreaker(fail_max=3, name='postgres')\n",
     {"threshold": 3, "recovery": 60, "half_open": 1}),  # pybreaker's default reset_timeout and one trial call
    ("from aiobreaker import CircuitBreaker\nfrom datetime import timedelta\n"
     "db = CircuitBreaker(fail_max=5, timeout_duration=timedelta(minutes=2), name='postgres')\n",
     {"threshold": 5, "recovery": 120, "half_open": 1}),
    ("from circuitbreaker import circuit\n@circuit(failure_threshold=4, recovery_timeout=45, name='postgres')\n"
     "def query():\n    pass\n", {"threshold": 4, "recovery": 45, "half_open": 1}),
])
def test_library_breakers(tmp_path, source, settings):
    code = code_of(tmp_path, {"app/db.py": source})
    assert [(b.name, b.file, b.settings) for b in code.breakers] == [("postgres", "app/db.py", settings)]


def test_hand_written_class_defaults_and_its_state_constants(tmp_path):
    code = code_of(tmp_path, {
        "app/breaker.py": "class CircuitBreaker:\n    CLOSED, OPEN, HALF_OPEN = 0, 1, 2\n"
                          "    def __init__(self, name, fail_max, reset_timeout=60, half_open_max=2):\n        pass\n",
        "app/db.py": "from .breaker import CircuitBreaker\nLIMIT = 5\n"
                     "db = CircuitBreaker('postgres', fail_max=LIMIT, reset_timeout=30)\n",
    })
    (breaker,) = code.breakers
    assert (breaker.name, breaker.line) == ("postgres", 3)
    # a variable's value is unknown without running the code: not read, never guessed
    assert breaker.settings == {"recovery": 30, "half_open": 2}
    assert code.states == {"closed": 0, "open": 1, "half_open": 2}


def test_the_gauges_help_text_states_the_encoding(tmp_path):
    code = code_of(tmp_path, {"app/metrics.py": "from prometheus_client import Gauge\n"
                                                "POOL = Gauge('pool_size', 'connections of the pool')\n"
                                                "STATE = Gauge('circuit_state', 'state: 0 closed, 1 half-open, 2 open', ['breaker'])\n"})
    assert code.states == {"closed": 0, "half_open": 1, "open": 2}


def test_tests_are_left_out_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    code = code_of(tmp_path, {
        "app/db.py": f"open({str(marker)!r}, 'w').write('x')\nimport pybreaker\n"
                     "db = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, name='postgres')\n",
        "app/tests/test_db.py": "import pybreaker\nb = pybreaker.CircuitBreaker(fail_max=1, name='postgres')\n",
        "app/db_test.py": "import pybreaker\nb = pybreaker.CircuitBreaker(fail_max=1, name='postgres')\n",
        "app/broken.py": "def (:\n",
    })
    assert [(b.file, b.settings["threshold"]) for b in code.breakers] == [("app/db.py", 5)]
    assert code.states is None
    assert not marker.exists()


# --- which service's declaration is read where ------------------------------------------------------


def two_service_stack(root: Path, ui: dict) -> Stack:
    """A LiteLLM gateway with its bind-mounted config (no breaker in it), and a second API service `ui`."""
    stack = gateway_stack(root, {"master_key": "os.environ/MASTER_KEY"})
    compose = yaml.safe_load((stack / "compose.yml").read_text())
    compose["services"]["ui"] = {"depends_on": ["db"], **ui}
    (stack / "compose.yml").write_text(yaml.safe_dump(compose))
    profile = yaml.safe_load((stack / "stackproof.yml").read_text())
    profile["roles"]["api_services"] = ["gateway", "ui"]
    (stack / "stackproof.yml").write_text(yaml.safe_dump(profile))
    return Stack(stack, 20, Redactor())


def test_a_config_mounted_into_another_service_is_not_read_for_this_one(tmp_path):
    """The gateway's config is its own: `ui`, which does not mount it, is not said to declare no breaker in it.
    The gateway's missing breaker is certain, so the unread `ui` does not turn it into not proven."""
    stack = two_service_stack(tmp_path / "stack", {"image": "example/ui:1"})
    declared = declared_breakers(stack)
    assert [(d.service, d.config, d.settings) for d in declared] == [("gateway", "litellm/config.yaml", None)]
    assert declared[0].none_possible.startswith("LiteLLM has no circuit breaker for its database"), declared


def test_litellm_without_a_breaker_fails_saying_litellm_has_none(tmp_path, run_static):
    """The breaker row names what the stack lacks in its own terms, not our config key."""
    run = run_static(gateway_stack(tmp_path / "stack", {"master_key": "os.environ/MASTER_KEY"}), "-k", "breaker_setting")
    reasons = {row["reason"] for control in run.report["controls"] if control["id"] == "circuit_breakers"
               for row in control["checks"] if row["status"] == "FAIL"}
    assert reasons == {"litellm/config.yaml: gateway declares no breaker: LiteLLM has no circuit breaker for its "
                       "database (its router's allowed_fails and cooldown_time guard model deployments)"}, reasons


def test_a_service_whose_code_is_outside_the_stack_dir_is_not_proven_and_says_where(tmp_path):
    """Its build context outside the stack dir: never read, and the reason says so (not "no code of it")."""
    (tmp_path / "backend").mkdir()
    config = tmp_path / "stack/litellm/config.yaml"
    stack = two_service_stack(tmp_path / "stack", {"build": {"context": "../backend"}})
    config.write_text(yaml.safe_dump({"general_settings": {}, "circuit_breaker": {"postgres": {"failure_threshold": 5}}}))
    with pytest.raises(NotDeclared, match=r"no breaker declaration for service ui: it mounts no config file "
                                          r"\(litellm/config.yaml is another service's\) and its code, the build "
                                          r"context \.\./backend, is outside the stack dir"):
        declared_breakers(stack)


# --- Go: sony/gobreaker ------------------------------------------------------------------------

GO_BREAKER = Template('''package db

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker"
)

var breakerState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "gw_breaker_state",
	Help: "Breaker state by dependency.",
}, []string{"breaker"})

var Postgres = gobreaker.NewCircuitBreaker(gobreaker.Settings{
	Name:        "postgres",
	MaxRequests: $max_requests,
	Timeout:     $timeout,
	ReadyToTrip: func(counts gobreaker.Counts) bool {
		return counts.ConsecutiveFailures $trip
	},
	OnStateChange: func(name string, from, to gobreaker.State) {
		breakerState.WithLabelValues(name).Set(float64(Postgres.State()))
	},
})
''')


@pytest.mark.parametrize("fields, settings", [
    ({"max_requests": "2", "timeout": "30 * time.Second", "trip": ">= 4"},
     {"threshold": 4, "recovery": 30, "half_open": 2}),
    ({"max_requests": "0", "timeout": "time.Minute * 2", "trip": "> 9"},  # MaxRequests 0 lets one request through
     {"threshold": 10, "recovery": 120, "half_open": 1}),
    ({"max_requests": "uint32(3)", "timeout": "0", "trip": "> 5"},  # Timeout 0 is gobreaker's 60 s
     {"threshold": 6, "recovery": 60, "half_open": 3}),
    ({"max_requests": "1", "timeout": "cfg.OpenFor", "trip": "> 2"},  # computed at run time: not read
     {"threshold": 3, "half_open": 1}),
])
def test_gobreaker_settings(tmp_path, fields, settings):
    code = code_of(tmp_path, {"gateway/internal/db/breaker.go": GO_BREAKER.substitute(**fields),
                              "gateway/internal/db/breaker_test.go": GO_BREAKER.substitute(
                                  max_requests="9", timeout="time.Hour", trip="> 99"),
                              "gateway/vendor/github.com/sony/gobreaker/gobreaker.go": "package gobreaker\n"
                              "var s = gobreaker.Settings{Name: \"postgres\", MaxRequests: 50}\n"})
    (breaker,) = code.breakers
    assert (breaker.name, breaker.file, breaker.line, breaker.settings) == (
        "postgres", "gateway/internal/db/breaker.go", 15, settings)
    assert code.states == {"closed": 0, "half_open": 1, "open": 2}  # gobreaker's State exported as a number


def test_a_gobreaker_left_at_its_defaults_and_a_help_text_encoding(tmp_path):
    code = code_of(tmp_path, {"svc/main.go": 'package main\nvar g = prometheus.GaugeOpts{Name: "state", '
                                             'Help: "circuit state: 0 closed, 1 open, 2 half-open"}\n'
                                             'var cb = gobreaker.NewCircuitBreaker(gobreaker.Settings{Name: "postgres"})\n'})
    assert [b.settings for b in code.breakers] == [{"threshold": 6, "recovery": 60, "half_open": 1}]
    assert code.states == {"closed": 0, "open": 1, "half_open": 2}


def go_gateway_stack(root: Path, **fields: str) -> Path:
    """A Go gateway built from the stack dir, whose code builds its Postgres breaker with gobreaker."""
    (root / "gateway/internal/db").mkdir(parents=True)
    (root / "gateway/internal/db/breaker.go").write_text(GO_BREAKER.substitute(**fields))
    (root / "gateway/Dockerfile").write_text("FROM scratch\nCOPY gateway /gateway\n")
    (root / "compose.yml").write_text(yaml.safe_dump({"services": {
        "gateway": {"build": {"context": "./gateway"}, "depends_on": ["db"]},
        "db": {"image": "postgres:16"}}}))
    (root / "stackproof.yml").write_text(yaml.safe_dump({"roles": {"postgres": "db", "api_services": ["gateway"]}}))
    return root


def breaker_rows(run) -> dict[str, dict]:
    return {row["nodeid"].split("::")[1]: row for control in run.report["controls"] if control["id"] == "circuit_breakers"
            for row in control["checks"] if "breaker_setting" in row["nodeid"]}


def test_a_go_breaker_is_judged_in_gobreakers_names(tmp_path, run_static):
    """A sane gobreaker passes the three setting checks; one that never lets a trial call through long enough
    (a 10-minute Timeout) fails only the recovery check, naming the file, line and gobreaker's field."""
    good = breaker_rows(run_static(go_gateway_stack(tmp_path / "good", max_requests="2", timeout="30 * time.Second",
                                                    trip=">= 5"), "-k", "breaker_setting"))
    assert {name: row["status"] for name, row in good.items()} == dict.fromkeys(
        ("test_breaker_setting[threshold]", "test_breaker_setting[recovery]", "test_breaker_setting[half_open]"), "PASS")
    bad = breaker_rows(run_static(go_gateway_stack(tmp_path / "bad", max_requests="2", timeout="10 * time.Minute",
                                                   trip=">= 5"), "-k", "breaker_setting"))
    assert {name for name, row in bad.items() if row["status"] == "FAIL"} == {"test_breaker_setting[recovery]"}
    assert bad["test_breaker_setting[recovery]"]["reason"] == (
        'gateway/internal/db/breaker.go:15: gobreaker.Settings{Name: "postgres"} Timeout is 600.0 for gateway '
        "(expected a duration > 0 and <= 300s)")


# --- Java: resilience4j in a Spring application's config ---------------------------------------

SPRING_YAML = """spring:
  datasource:
    url: jdbc:postgresql://db:5432/app
resilience4j:
  circuitbreaker:
    configs:
      default:
        minimum-number-of-calls: 10
        failure-rate-threshold: 50
    instances:
      postgres:
        baseConfig: default
        waitDurationInOpenState: 30s
        permittedNumberOfCallsInHalfOpenState: 3
"""


@pytest.mark.parametrize("name, text, settings", [
    ("src/main/resources/application.yml", SPRING_YAML, {"threshold": 5, "recovery": 30, "half_open": 3}),
    ("src/main/resources/application-prod.properties",
     "resilience4j.circuitbreaker.instances.postgres.minimumNumberOfCalls=20\n"
     "resilience4j.circuitbreaker.instances.postgres.failureRateThreshold=25\n"
     "resilience4j.circuitbreaker.instances.postgres.wait-duration-in-open-state=PT2M\n",
     {"threshold": 5, "recovery": 120, "half_open": 10}),  # resilience4j's default of 10 trial calls
    ("src/main/resources/application.yaml", "resilience4j:\n  circuitbreaker:\n    instances:\n      postgres: {}\n",
     {"threshold": 50, "recovery": 60, "half_open": 10}),  # resilience4j's defaults: 100 calls at 50 %
], ids=["yaml-over-default-config", "properties-kebab-iso", "defaults"])
def test_resilience4j_breakers(tmp_path, name, text, settings):
    code = code_of(tmp_path, {f"gateway/{name}": text})
    assert [(b.name, b.settings) for b in code.breakers] == [("postgres", settings)]
    assert code.breakers[0].keys["recovery"] == "waitDurationInOpenState"


def test_a_java_breaker_is_judged_in_resilience4js_names(tmp_path, run_static):
    root = tmp_path / "stack"
    (root / "gateway/src/main/resources").mkdir(parents=True)
    (root / "gateway/src/main/resources/application.yml").write_text(
        SPRING_YAML.replace("waitDurationInOpenState: 30s", "waitDurationInOpenState: 10m"))
    (root / "gateway/Dockerfile").write_text("FROM eclipse-temurin:21\nCOPY target/app.jar /app.jar\n")
    (root / "compose.yml").write_text(yaml.safe_dump({"services": {
        "gateway": {"build": "./gateway", "depends_on": ["db"]}, "db": {"image": "postgres:16"}}}))
    (root / "stackproof.yml").write_text(yaml.safe_dump({"roles": {"postgres": "db", "api_services": ["gateway"]}}))
    rows = breaker_rows(run_static(root, "-k", "breaker_setting"))
    assert {name for name, row in rows.items() if row["status"] == "FAIL"} == {"test_breaker_setting[recovery]"}, rows
    assert rows["test_breaker_setting[recovery]"]["reason"] == (
        "gateway/src/main/resources/application.yml:11: resilience4j.circuitbreaker.instances.postgres "
        "waitDurationInOpenState is 600 for gateway (expected a duration > 0 and <= 300s)")
