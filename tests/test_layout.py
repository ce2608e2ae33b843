"""The layout holds: only `stackproof/io/` opens, lists or walks files.

The stack is untrusted, and every way its files are touched (bounded reads, no FIFO left blocking, no
recursion into a nested tree, no symlink followed out) lives in one layer. A new `Path.read_text()` in a
check or a model would read a `/dev/zero` symlink whole; this test names it before a stack does."""

from __future__ import annotations

import ast
from pathlib import Path

from harness import REPO

PACKAGE = REPO / "stackproof"
IO_LAYER = PACKAGE / "io"
# programs the live checks run inside the stack's containers: the container's files, not the host's
IN_CONTAINERS = PACKAGE / "engine/programs"

PATH_METHODS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "iterdir", "glob", "rglob"}
MODULE_CALLS = {"os": {"open", "fdopen", "scandir", "listdir", "walk"}, "glob": {"glob", "iglob"}, "io": {"open"},
                "shutil": {"copy", "copy2", "copyfile", "copytree"}}

# (module, call): why it is not a stack file
ALLOWED = {
    ("engine/live.py", "read_text"): "the package's own program files (importlib.resources)",
    ("report/history.py", "open"): "the history file in the report dir, the suite's own",
    ("report/history.py", "fdopen"): "the history file in the report dir, the suite's own",
    ("report/files.py", "glob"): "leftover staging dirs in the report dir, the suite's own",
    ("init.py", "fdopen"): "the profile init writes (a mkstemp file)",
    ("init.py", "write_bytes"): "the profile init writes (the previous one restored when writing failed)",
    ("bundle.py", "copytree"): "the suite's own bundled files, copied out of the package",
    ("report/files.py", "write_text"): "the report files, in the suite's own staging dir",
    ("report/files.py", "fdopen"): "the --sarif copy of the report, where the operator asked",
    ("resources/breakers.py", "write_text"): "the promtool test the suite writes into its own temporary dir",
    ("resources/breakers.py", "write_bytes"): "copies of the rule files (read through io) in that same temporary dir",
    ("resources/scripts.py", "write_bytes"): "certificates the suite makes for the monitor's scenarios",
}


def file_calls(path: Path) -> list[tuple[str, int]]:
    """(call name, line) of every call in `path` that opens, lists or walks files."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            found.append(("open", node.lineno))
        elif isinstance(func, ast.Attribute):
            module = func.value.id if isinstance(func.value, ast.Name) else None
            if func.attr in MODULE_CALLS.get(module or "", ()) or (module not in MODULE_CALLS and func.attr in PATH_METHODS):
                found.append((func.attr, node.lineno))
    return found


def test_only_the_io_layer_touches_files():
    outside = [path for path in sorted(PACKAGE.rglob("*.py"))
               if IO_LAYER not in path.parents and IN_CONTAINERS not in path.parents]
    offenders = [f"stackproof/{path.relative_to(PACKAGE)}:{line}: {name}()"
                 for path in outside for name, line in file_calls(path)
                 if (str(path.relative_to(PACKAGE)), name) not in ALLOWED]
    assert not offenders, "file access outside stackproof/io/ (move it into io/, or allow it here with why):\n" + \
        "\n".join(offenders)


def test_the_layout_check_can_fail(tmp_path):
    planted = tmp_path / "check.py"
    planted.write_text("from pathlib import Path\n\ndef read(p):\n    return Path(p).read_text()\n")
    assert file_calls(planted) == [("read_text", 4)]
