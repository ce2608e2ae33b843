"""The live self-tests' journal: a run killed mid-defect leaves the stack's files restorable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import journal
import pytest


@pytest.fixture
def journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(journal, "JOURNAL", tmp_path / "journal")
    return tmp_path / "journal"


def _killed_mid_defect(journal_dir: Path, *changes: tuple[Path, bytes | None]) -> None:
    """A process saves each file, changes it (None: creates it), and is killed before it restores any."""
    program = f"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {str(Path(journal.__file__).parent)!r})
import journal
journal.JOURNAL = Path({str(journal_dir)!r})
for path, content in {[(str(p), c) for p, c in changes]!r}:
    journal.save_file(Path(path))
    Path(path).write_bytes(content)
    os.chmod(path, 0o644)
os.kill(os.getpid(), signal.SIGKILL)
"""
    assert subprocess.run([sys.executable, "-c", program], timeout=30).returncode == -9


def test_files_changed_by_a_killed_run_are_restored(tmp_path: Path, journal_dir: Path):
    key = tmp_path / "server.key"
    key.write_bytes(b"the key as set up")
    key.chmod(0o600)
    new = tmp_path / "added-by-the-defect.yml"
    _killed_mid_defect(journal_dir, (key, b"a defect"), (key, b"a second defect over the first"), (new, b"x"))

    restored = journal.restore_interrupted()

    assert sorted(restored) == sorted([key, key, new])
    assert key.read_bytes() == b"the key as set up" and key.stat().st_mode & 0o777 == 0o600
    assert not new.exists()
    assert list(journal_dir.iterdir()) == []


def test_a_running_writers_saves_are_left_to_it(tmp_path: Path, journal_dir: Path):
    """Another self-test run still holds the file: it restores it itself, at the end of its test."""
    config = tmp_path / "config.yaml"
    config.write_bytes(b"as set up")
    saved = journal.save_file(config)
    config.write_bytes(b"a defect under test")

    assert journal.restore_interrupted() == []
    assert config.read_bytes() == b"a defect under test"
    journal.restore_file(saved)
    assert config.read_bytes() == b"as set up" and list(journal_dir.iterdir()) == []


def test_the_script_says_what_it_restored(tmp_path: Path, journal_dir: Path):
    """bin/stackproof selftest runs it first: exit 3 tells it to recreate a running reference stack."""
    config = tmp_path / "config.yaml"
    config.write_bytes(b"as set up")
    _killed_mid_defect(journal_dir, (config, b"a defect"))
    script = [sys.executable, journal.__file__]
    env = {**os.environ, "STACKPROOF_SELFTEST_JOURNAL": str(journal_dir)}

    first = subprocess.run(script, capture_output=True, text=True, timeout=30, env=env)
    second = subprocess.run(script, capture_output=True, text=True, timeout=30, env=env)

    assert first.returncode == 3 and f"restored {config} (changed by a self-test run that was interrupted)" in first.stderr
    assert config.read_bytes() == b"as set up"
    assert (second.returncode, second.stderr) == (0, "")


def test_a_file_of_a_copy_removed_since_is_dropped(tmp_path: Path, journal_dir: Path):
    """The Podman self-tests change a copy of the stack made for the run, which the run removes."""
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "server.crt").write_bytes(b"as set up")
    _killed_mid_defect(journal_dir, (copy / "server.crt", b"a defect"))
    (copy / "server.crt").unlink()
    copy.rmdir()

    assert journal.restore_interrupted() == []
    assert not copy.exists() and list(journal_dir.iterdir()) == []
