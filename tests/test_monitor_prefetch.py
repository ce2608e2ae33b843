"""The TLS monitor's scenarios are made ahead, together (stackproof/scripts.py `Monitor.prefetch`):
each is made exactly once however often the checks prefetch, a run that failed in the sandbox stops
every later one, and an ordinary error stays that scenario's own."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from stackproof.errors import StackError
from stackproof.resources.scripts import Monitor, ScriptRunFailed

LABELS = ("365-days-left", "expired", "missing-file", "garbage-file")


def _monitor(outcomes: dict[str, object]) -> tuple[Monitor, Counter]:
    made = Counter()
    monitor = object.__new__(Monitor)
    monitor.broken, monitor._prefetched, monitor._made, monitor.box = None, {}, {}, None
    monitor._open = lambda: None

    def run(label, cert):
        made[label] += 1
        outcome = outcomes.get(label, SimpleNamespace(label=label))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monitor._run = run
    return monitor, made


def test_each_scenario_is_made_once_however_often_it_is_prefetched():
    monitor, made = _monitor({})
    for label in LABELS:  # as the parametrized check does: prefetch all, then ask for its own
        monitor.prefetch({name: None for name in LABELS})
        assert monitor.run(label, None).label == label
    assert made == Counter({label: 1 for label in LABELS})


def test_a_scenario_asked_for_again_is_the_same_run():
    """The interface probe is the valid scenario's run: asked for twice, made once, the same outcome both times
    (an error too)."""
    monitor, made = _monitor({"expired": StackError("expired: unreadable output")})
    first = monitor.run("365-days-left", None)
    monitor.prefetch({name: None for name in LABELS})
    assert monitor.run("365-days-left", None) is first
    for _ in range(2):
        with pytest.raises(StackError, match="unreadable output"):
            monitor.run("expired", None)
    assert made == Counter({label: 1 for label in LABELS})


def test_a_failed_sandbox_run_stops_the_later_ones_an_ordinary_error_does_not():
    monitor, _ = _monitor({"expired": StackError("expired: unreadable output"),
                           "missing-file": ScriptRunFailed("did not finish within 10s")})
    monitor.prefetch({name: None for name in LABELS})
    assert monitor.run("365-days-left", None).label == "365-days-left"
    with pytest.raises(StackError, match="unreadable output"):
        monitor.run("expired", None)
    assert monitor.run("garbage-file", None).label == "garbage-file"
    with pytest.raises(ScriptRunFailed):
        monitor.run("missing-file", None)
    with pytest.raises(StackError, match="on an earlier run"):
        monitor.run("other-cn", None)


def test_handing_over_a_shared_box_tolerates_files_another_run_removes(tmp_path, monkeypatch):
    """Prefetched runs share one box: while one hands the box to the script's uid, another run's
    script removes its temp file (`mktemp` then `mv`). Seen as FileNotFoundError under load."""
    from stackproof.io import sandbox

    (tmp_path / "out").mkdir()
    for name in ("a.prom", ".tmp.1", ".tmp.2"):
        (tmp_path / "out" / name).write_text("x")
    box = object.__new__(sandbox.ScriptBox)
    box.root, box.uid = tmp_path, 65534
    owned, real_chown = [], sandbox.os.chown

    def chown_while_another_run_cleans_up(path, uid, gid, follow_symlinks=True):
        for temp in tmp_path.glob("out/.tmp.*"):  # the other run's script finishes now
            temp.unlink()
        real_chown(path, uid, gid, follow_symlinks=follow_symlinks)
        owned.append(path)

    monkeypatch.setattr(sandbox.os, "chown", chown_while_another_run_cleans_up)
    box.hand_over()
    assert any(path.endswith("a.prom") for path in owned)
    assert (tmp_path / "out/a.prom").stat().st_uid == 65534
