"""The habits of the field: ruff and mypy, as configured in pyproject.toml, pass on the checkout."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the tools of the interpreter running the self-tests (the test extra)


def _run(tool: str, args: list[str], timeout: float) -> None:
    done = subprocess.run([str(BIN / tool), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    shown = "\n".join((done.stdout + done.stderr).splitlines()[:40])
    assert done.returncode == 0, f"{tool} {' '.join(args)} exited {done.returncode}:\n{shown}"


def test_ruff():
    _run("ruff", ["check", "."], 120)


def test_mypy():
    _run("mypy", [], 300)
