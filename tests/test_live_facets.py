"""The live stack's facets without an engine: which container serves a service, the one health wait, and the
programs run inside containers (stackproof/engine/programs/), run here with this machine's python3 against
a local HTTP server, as a container's python3 runs them."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from stackproof.engine import live as live_module
from stackproof.engine.live import Containers, program_source
from stackproof.errors import StackError
from stackproof.report.outcome import NotProven


class _Container:
    """A container whose state moves through `states` (status, health) on each reload."""

    def __init__(self, name: str, states: list[tuple[str, str]]):
        self.id = self.name = name
        self.states = states
        self.reload()

    def reload(self) -> None:
        self.status, health = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        self.attrs = {"State": {"Health": {"Status": health}}}


def _containers(placed: dict[str, str], unreached: tuple[str, ...] = ()) -> Containers:
    engine = SimpleNamespace(
        name="compose", project="p", docker_host=None,
        placed=[SimpleNamespace(container=_Container(name, [("running", "healthy")]), service=service, docker_host=None)
                for name, service in placed.items()],
        unreached=[SimpleNamespace(service=service) for service in unreached])
    return Containers(SimpleNamespace(engine=engine, timeout=5.0, project="p", stack=None))


def test_a_service_is_found_counted_or_named_as_missing():
    containers = _containers({"api-1": "api", "api-2": "api", "db-1": "db"}, unreached=("api", "cache"))
    assert [c.name for c in containers] == ["api-1", "api-2", "db-1"] and len(containers) == 3
    assert containers.of("db").name == "db-1" and containers.replicas("api") == 3
    assert containers.services() == {"api", "db"}
    with pytest.raises(NotProven, match="service cache runs only in unreached tasks"):
        containers.of("cache")
    with pytest.raises(StackError, match="service web: no running container in compose project 'p'"):
        containers.of("web")
    with pytest.raises(NotProven, match="secret modes unchecked in 2 task"):
        containers.require_every("secret modes")


@pytest.mark.parametrize("states,after,error", [
    ([("restarting", "starting"), ("running", "starting"), ("running", "healthy")], "", None),
    ([("running", "unhealthy")], "a restart", "not healthy 0.01s after a restart (unhealthy)"),
    ([("exited", "healthy")], "", "not healthy within 0.01s (healthy)"),
])
def test_one_bounded_health_wait(monkeypatch, states, after, error):
    monkeypatch.setattr(live_module.time, "sleep", lambda seconds: None)
    container, containers = _Container("c", states), _containers({})
    if error is None:
        containers.wait_healthy(container, 5, after)
        assert container.status == "running"
    else:
        with pytest.raises(StackError, match=re.escape(error)):
            containers.wait_healthy(container, 0.01, after)


@pytest.fixture
def server():
    """A local HTTP server: /ok answers 200 with the request's X-Key header, anything else 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (self.headers.get("X-Key") or "-").encode()
            self.send_response(200 if self.path == "/ok" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _run(program: str, *args: str) -> bytes:
    done = subprocess.run([sys.executable, "-c", program_source(program), *args], capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_in_container_get_prints_the_status_then_the_body(server):
    assert _run("http_get.py", f"{server}/ok", json.dumps({"X-Key": "k1"}), "5") == b"200\nk1"
    assert _run("http_get.py", f"{server}/missing", "{}", "5") == b"404\n-"


def test_the_concurrent_gets_report_each_request(server, tmp_path):
    key = tmp_path / "key"
    key.write_text("k2\n")
    rows = json.loads(_run("concurrent_gets.py", json.dumps([f"{server}/ok", f"{server}/missing"]), "4", "X-Key",
                           str(key), "5"))
    assert sorted((i, code, body) for i, _, _, code, body in rows) == [
        (0, 200, "k2"), (1, 404, "k2"), (2, 200, "k2"), (3, 404, "k2")]
    unreachable = json.loads(_run("concurrent_gets.py", json.dumps(["http://127.0.0.1:9/"]), "1", "", "", "1"))
    assert unreachable[0][3] == 0 and unreachable[0][4]  # no status, the exception's name
