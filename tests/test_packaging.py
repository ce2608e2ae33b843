"""The installable package: a wheel built from this checkout, installed into a fresh venv,
validates a stack from a directory that has nothing to do with the checkout.

The fresh venv gets only the wheel (`--no-deps`, no index); its dependencies come from the
environment running these tests, appended to the venv's path by a .pth file. That keeps the
test fast and offline, and `stackproof` itself can only come from the wheel: the checkout is
not on the path, and the running environment's editable install is a plain directory there
(its .pth hooks do not run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from harness import REPO, stack_secrets

PROBE = '''
import json, os, sys
def pytest_unconfigure(config):
    import stackproof
    modules = sorted(sys.modules)
    with open(os.environ["STACKPROOF_PROBE_OUT"], "w") as out:
        json.dump({"stackproof": stackproof.__file__, "modules": modules}, out)
'''
"""A pytest plugin (loaded with -p) that records what the run imported."""

UNUSED_BY_A_STATIC_RUN = ("stackproof.engine.live", "docker", "requests", "urllib3", "paramiko", "websocket", "hypothesis")
"""Modules a static run has no use for (issue 10 §5): the live backend, the Docker SDK and its HTTP
stack, test-only plugins. (The standard library's http.client does get imported: prometheus_client,
whose text parser the static checks use, imports its exposition server with its package.)"""


def run(cmd: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{cmd[:3]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="session")
def wheel(reference_stack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout that includes the reference stack's
    generated secrets and certificate (as a developer's checkout does)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name, tree in (("stackproof", REPO / "stackproof"), ("suites", REPO / "suites"), ("stack", reference_stack),
                       ("docs/controls", REPO / "docs/controls")):
        shutil.copytree(tree, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "logs"))
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        timeout=300)
    (built,) = dist.glob("stackproof-*.whl")
    return built


def test_wheel_contents(wheel: Path, reference_stack: Path) -> None:
    """The wheel holds the package, its suites and its reference stack, the console command and
    the pytest11 entry point; no top-level `plugins`, and nothing setup.sh generated: no secret
    file, certificate or .env, and no secret value in any byte of it."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        data = b"".join(archive.read(name) for name in names)
        dist_info = next(name.split("/")[0] for name in names if name.endswith(".dist-info/RECORD"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
    assert {name.split("/")[0] for name in names} == {"stackproof", dist_info}
    for control in ("api_key_permissions", "docker_secrets_mode", "connection_pool", "alert_rules",
                    "tls_monitoring", "progressive_disclosure"):
        assert f"stackproof/suites/test_{control}.py" in names
    for path in ("docker-compose.yml", "scripts/setup.sh", "scripts/monitor-tls-certs.sh", ".dockerignore"):
        assert any(name.startswith("stackproof/reference_stack/") and name.endswith(path) for name in names), path
    assert modes["stackproof/reference_stack/scripts/setup.sh"] & 0o111, "scripts lose their executable bit"
    assert "stackproof/suite.ini" in names
    assert "stackproof/control_docs/api_key_permissions.md" in names, "the controls' pages the reports link to"
    generated = [n for n in names if "/secrets/" in n or "/nginx/certs/" in n or n.endswith("/.env")]
    assert generated == [], f"generated secrets in the wheel: {generated}"
    for value in stack_secrets(reference_stack):
        assert value not in data, f"a secret value ({len(value)} bytes) is in the wheel"
    assert "stackproof = stackproof.cli:main" in entry_points
    assert "stackproof.plugin = stackproof.plugin" in entry_points


def test_installed_wheel_validates_from_another_directory(wheel: Path, stack_copy: Path, tmp_path: Path) -> None:
    """In a fresh venv with only the wheel, run from an unrelated directory (holding a pytest
    config of its own that would break the run): `stackproof init` writes the profile of a stack
    given by a relative --stack-dir, and `stackproof validate --static` validates it; without
    --stack-dir (and with pytest's plugin autoloading off) it validates the bundled reference
    stack, set up in $STACKPROOF_HOME, never in site-packages. Reports go to ./reports/; the run
    imports stackproof from the wheel and none of the modules a static run does not use."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q", "--no-deps",
         "--no-index", str(wheel)], timeout=300)
    (site_packages,) = venv.glob("lib/python*/site-packages")
    (site_packages / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    (probe_dir / "stackproof_probe.py").write_text(PROBE)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    # a user's project config: it must not apply to the validation run
    (workdir / "pytest.ini").write_text("[pytest]\naddopts = --this-option-does-not-exist\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("STACKPROOF_", "PYTEST_", "PYTHON"))},
        "PATH": f"{venv / 'bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "STACKPROOF_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(probe_dir),
    }
    command = [str(venv / "bin/stackproof"), "validate", "--static", "-p", "stackproof_probe"]

    relative = os.path.relpath(stack_copy, workdir)
    (stack_copy / "stackproof.yml").unlink()
    run([str(venv / "bin/stackproof"), "init", "--stack-dir", relative], timeout=120, cwd=workdir, env=env)
    assert (stack_copy / "stackproof.yml").is_file()

    given = {**env, "STACKPROOF_PROBE_OUT": str(tmp_path / "given.json")}
    done = subprocess.run([*command, "--stack-dir", relative], cwd=workdir, env=given, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((workdir / "reports/validation-report.json").read_text())
    assert report["verdict"]["decision"] == "STATIC PASS"
    assert report["target"]["stack_dir"] == str(stack_copy)
    doc = Path(urlsplit(report["controls"][0]["doc"]).path)  # the installed copy of the control's page
    assert doc.is_relative_to(site_packages) and doc.is_file(), doc
    assert all(row["nodeid"].startswith("suites/test_") for c in report["controls"] for row in c["checks"])
    probe = json.loads((tmp_path / "given.json").read_text())
    assert Path(probe["stackproof"]).is_relative_to(site_packages), probe["stackproof"]
    imported = [name for name in UNUSED_BY_A_STATIC_RUN if name in probe["modules"]]
    assert imported == [], f"a static run imported {imported}"

    # also with plugin autoloading off: the command names its plugin itself
    bundled = {**env, "STACKPROOF_PROBE_OUT": str(tmp_path / "bundled.json"), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    done = subprocess.run(command, cwd=workdir, env=bundled, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((workdir / "reports/validation-report.json").read_text())
    assert report["verdict"]["decision"] == "STATIC PASS"
    assert report["target"]["stack_dir"] == str(tmp_path / "home/stack")
    assert not list((site_packages / "stackproof").rglob("secrets")), "set-up wrote into site-packages"
    assert not list(site_packages.rglob("validation-report.*")), "a report was written into site-packages"


REGISTRATIONS_PROBE = '''
import json, os
def pytest_configure(config):
    import stackproof.plugin
    names = [name for name, plugin in config.pluginmanager.list_name_plugin() if plugin is stackproof.plugin]
    with open(os.environ["STACKPROOF_PROBE_OUT"], "w") as out:
        json.dump(names, out)
'''


def test_checkout_run_registers_the_plugin_once(tmp_path: Path) -> None:
    """From the checkout, conftest.py names the plugin and the installed pytest11 entry point
    loads it too: it is registered once, under its module name."""
    (tmp_path / "registrations_probe.py").write_text(REGISTRATIONS_PROBE)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "STACKPROOF_PROBE_OUT": str(tmp_path / "names.json")}
    run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "registrations_probe", "suites"], timeout=120,
        cwd=REPO, env=env)
    assert json.loads((tmp_path / "names.json").read_text()) == ["stackproof.plugin"]
