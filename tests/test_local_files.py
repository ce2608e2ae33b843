"""The static backend's file facts (`os.stat`) mean what testinfra's shell-backed File module means."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import testinfra

from stackproof.io.local import local_host

FACTS = ("exists", "is_file", "is_directory", "is_symlink", "mode", "uid", "mtime", "linked_to")


def _kinds(root: Path) -> dict[str, Path]:
    """One path of every kind a stack dir may hold."""
    (root / "regular").write_text("x")
    (root / "regular").chmod(0o640)
    (root / "setuid").write_text("x")
    (root / "setuid").chmod(0o4750)
    (root / "dir").mkdir(mode=0o700)
    (root / "link").symlink_to("regular")
    (root / "link-to-dir").symlink_to("dir")
    (root / "chain").symlink_to("link")
    (root / "dangling").symlink_to("nowhere")
    os.mkfifo(root / "fifo", 0o600)
    os.chown(root / "regular", 10001, 10001)
    return {path.name: path for path in root.iterdir()} | {"missing": root / "missing"}


def _fact(file, name: str):
    try:
        value = getattr(file, name)
    except Exception:  # testinfra: AssertionError from a failed command; ours: FileNotFoundError
        return "raises"
    return int(value.timestamp()) if name == "mtime" else value


@pytest.mark.parametrize("kind", ["regular", "setuid", "dir", "link", "link-to-dir", "chain", "dangling", "fifo",
                                  "missing"])
def test_each_fact_of_each_kind_of_path_is_testinfras(tmp_path, kind):
    path = _kinds(tmp_path)[kind]
    ours, theirs = local_host(10).file(str(path)), testinfra.get_host("local://").file(str(path))
    for name in FACTS:
        expected = _fact(theirs, name)
        if name == "linked_to" and expected == "raises":  # realpath fails on a dangling link; we resolve it
            assert _fact(ours, name) == os.path.realpath(path)
            continue
        assert _fact(ours, name) == expected, f"{kind}: {name}"
