"""History (stackproof/history.py): each run appends a line; the report tells what changed since the previous
run of the same target (or a --baseline report): new failures (which lead a NO-GO's reason), fixes, failures
still there since when, flapping checks, and each control's strip over the last 30 runs. A hostile history
file is read in bounded time and never breaks the run."""

from __future__ import annotations

import json
import os
import threading

from harness import PROJECT

from stackproof.report.history import MAX_FILE_BYTES, WINDOW, Record, RunHistory

KEY_FILE = "ai-stack/compose/secrets/stack_api_key"
OWNER_ONLY = "suites/test_api_key_permissions.py::test_secret_files_owner_only"


def ids(checks: list[dict]) -> list[str]:
    return [check["nodeid"] for check in checks]


def test_fixed_then_regressed_then_flapping_and_a_baseline(stack_copy, run_static, tmp_path):
    """Three runs into one history: a 0644 key (the first run of the target: nothing to compare), fixed ("fixed
    since the last run"), broken again (a new failure, which the NO-GO's reason leads with, and flapping: pass and
    fail changed twice). Then the broken stack against the GO run's JSON report as --baseline (without the
    history): regressed since the baseline."""
    key = stack_copy / KEY_FILE
    reports = tmp_path / "reports"
    key.chmod(0o644)
    first = run_static(stack_copy, report_dir=reports)
    assert first.failed_gate and first.report["history"]["previous"] is None
    assert "No earlier run of this target in the history." in (reports / "validation-report.md").read_text()

    key.chmod(0o600)
    fixed = run_static(stack_copy, report_dir=reports)
    history = fixed.report["history"]
    assert fixed.passed and fixed.ret == 0, fixed.stdout[-2000:]
    assert history["previous"]["source"] == "history" and history["previous"]["verdict"] == "STATIC FAIL"
    assert ids(history["fixed"]) == [OWNER_ONLY] and history["new_failures"] == [] == history["flapping"]
    assert "fixed since the last run: test_secret_files_owner_only" in fixed.stdout
    markdown = (reports / "validation-report.md").read_text()
    assert "**Fixed since the last run** (1):" in markdown
    go_report = tmp_path / "go.json"
    go_report.write_bytes((reports / "validation-report.json").read_bytes())

    key.chmod(0o644)
    regressed = run_static(stack_copy, report_dir=reports)
    history, reason = regressed.report["history"], regressed.report["verdict"]["reason"]
    assert regressed.ret == 1 and ids(history["new_failures"]) == [OWNER_ONLY]
    assert reason.startswith("regressed since the last run: test_secret_files_owner_only; API key permissions failed: "
                             "secret file mode is not 0400/0600"), reason
    assert [(c["nodeid"], c["changes"]) for c in history["flapping"]] == [(OWNER_ONLY, 2)]
    strip = next(line for line in history["trend"] if line["control"] == "api_key_permissions")
    assert strip["statuses"] == ["FAIL", "PASS", "FAIL"] and len(history["runs"]) == 3
    assert "| API key permissions | ✗✓✗ |" in (reports / "validation-report.md").read_text()
    html = (reports / "validation-report.html").read_text()
    assert html.count('<span class="cell fail"') == 2 and "<script" not in html
    lines = (reports / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["verdict"] for line in lines] == ["STATIC FAIL", "STATIC PASS", "STATIC FAIL"]
    assert json.loads(lines[-1])["checks"][OWNER_ONLY] == "FAIL"

    against = run_static(stack_copy, "--baseline", str(go_report), "--no-history", report_dir=tmp_path / "baseline")
    history = against.report["history"]
    assert history["previous"]["source"] == "baseline" and ids(history["new_failures"]) == [OWNER_ONLY]
    assert against.report["verdict"]["reason"].startswith("regressed since the baseline: test_secret_files_owner_only;")
    assert not (tmp_path / "baseline" / "history.jsonl").exists()


def test_the_strip_of_thirty_and_failing_since_from_a_long_and_dirty_history(stack_copy, run_static, tmp_path):
    """A history of 45 runs of this target (and lines of another target, and garbage lines between): the strip
    shows the last 30 (29 earlier runs and this one), "still failing" dates back to the first run of the unbroken
    failing streak, the other target's runs do not count, and the garbage lines are skipped with a note."""
    (stack_copy / KEY_FILE).chmod(0o644)
    reports = tmp_path / "reports"
    reports.mkdir()
    record = {"v": 1, "target": str(stack_copy.resolve()), "project": PROJECT, "commit": None, "run": "COMPLETE",
              "controls": {"api_key_permissions": "PASS"}, "checks": {OWNER_ONLY: "PASS"}}
    lines = []
    for index in range(45):  # failing in runs 0-9 and 40-44 (the streak since run 40); passing in 10-39
        failing = index < 10 or index >= 40
        line = {**record, "time": f"2026-01-01T00:{index:02d}:00+00:00", "verdict": "NO-GO" if failing else "GO",
                "controls": {**record["controls"], "api_key_permissions": "FAIL" if failing else "PASS"},
                "checks": {**record["checks"], OWNER_ONLY: "FAIL" if failing else "PASS"}}
        lines.append(json.dumps(line))
        lines.append(json.dumps({**line, "target": "/elsewhere", "time": "2026-02-01T00:00:00+00:00"}))
        if index % 9 == 0:
            lines += ["{not json", '{"v": 1, "time": 5}', "[" * 50_000, "\x00garbage"]
    (reports / "history.jsonl").write_text("\n".join(lines) + "\n")

    run = run_static(stack_copy, report_dir=reports)
    history = run.report["history"]
    assert len(history["runs"]) == WINDOW == 30
    strip = next(line for line in history["trend"] if line["control"] == "api_key_permissions")
    assert strip["statuses"] == ["PASS"] * 24 + ["FAIL"] * 6
    assert history["runs"][0]["time"] == "2026-01-01T00:16:00+00:00"
    still = {check["nodeid"]: check["since"] for check in history["still_failing"]}
    assert still == {OWNER_ONLY: "2026-01-01T00:40:00+00:00"}
    failing = {row["nodeid"]: row["reason"] for c in run.report["controls"] for row in c["checks"] if row["status"] == "FAIL"}
    assert history["new_failures"] == [] and "regressed" not in run.report["verdict"]["reason"], failing
    assert any("20 unreadable line(s) skipped" in note for note in history["notes"]), history["notes"]
    assert "| API key permissions | " + "✓" * 24 + "✗" * 6 + " |" in (reports / "validation-report.md").read_text()


def test_a_hostile_history_file_does_not_hang_or_break_the_run(stack_copy, run_static, tmp_path):
    """A history file larger than the size cap, made of a huge unterminated line, deep JSON, invalid UTF-8, a
    valid line of the wrong shape and NUL bytes: the run ends in bounded time with its report, the history's
    bad lines are a note, and the file is cut back below its cap ending with this run's valid line."""
    reports = tmp_path / "reports"
    reports.mkdir()
    hostile = reports / "history.jsonl"
    with open(hostile, "wb") as out:
        out.write(b"x" * (MAX_FILE_BYTES + 1024))  # no newline at all
        out.write(b"\n" + b"[" * 200_000 + b"\n" + b"\xff\xfe\n" + b'{"v": 1, "checks": "all"}\n' + b"\x00" * 1000)
    run = run_static(stack_copy, report_dir=reports, timeout=120)
    assert run.report is not None, run.stdout[-3000:]
    assert any("unreadable line(s) skipped" in note for note in run.report["history"]["notes"])
    assert hostile.stat().st_size < MAX_FILE_BYTES
    last = hostile.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert Record.model_validate(json.loads(last)).time == run.report["generated"]


# --- the comparison's rules and the file's bounds, without a suite run ----------------------------------------------

def record(time: str, checks: dict[str, str], target: str = "/stack") -> Record:
    return Record(time=time, target=target, controls={"c": "PASS"}, checks=checks)


def test_flapping_counts_changes_between_pass_and_fail_only(tmp_path):
    """Skips and absences do not break a streak or count as a change; a waived failure is a failure."""
    path = tmp_path / "history.jsonl"
    statuses = ["PASS", "SKIPPED", "FAIL", None, "WAIVED", "PASS"]  # pass, fail, fail, pass: 2 changes
    path.write_text("".join(record(f"t{i}", {"a": s} if s else {}).model_dump_json() + "\n"
                            for i, s in enumerate(statuses)))
    history = RunHistory(path).compare(record("now", {"a": "PASS"}), {"a": "check a"})
    assert [(c["nodeid"], c["changes"]) for c in history["flapping"]] == [("a", 2)]
    assert history["fixed"] == [] and history["new_failures"] == []  # PASS then PASS
    history = RunHistory(path).compare(record("now", {"a": "FAIL"}), {})
    assert [c["changes"] for c in history["flapping"]] == [3] and [c["nodeid"] for c in history["new_failures"]] == ["a"]


def test_history_files_that_are_not_regular_files_are_notes(tmp_path):
    """A FIFO (which would block a reader) or a directory in place of the history: a note, at once."""
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    (tmp_path / "dir.jsonl").mkdir()
    for path in (fifo, tmp_path / "dir.jsonl"):
        history = RunHistory(path)
        done = threading.Event()
        worker = threading.Thread(target=lambda history=history, done=done: (
            history.compare(record("now", {}), {}), history.append(record("now", {})), done.set()), daemon=True)
        worker.start()
        assert done.wait(20), f"{path.name}: the history hung"
        assert any("not read" in note for note in history.notes) and any("not written" in note for note in history.notes)


def test_cutting_the_history_writes_through_no_link(tmp_path):
    """A history past its cap is cut back through a new file of a random name: a link committed at the name
    the run would have used (`.history.jsonl.<pid>.tmp`, pointing outside) is neither written through nor
    followed, and the history is cut."""
    reports, outside = tmp_path / "reports", tmp_path / "outside"
    reports.mkdir()
    outside.mkdir()
    (outside / "target").write_text("outside\n")
    path = reports / "history.jsonl"
    (reports / f".history.jsonl.{os.getpid()}.tmp").symlink_to(outside / "target")
    line = record("old", {"a": "PASS"}).model_dump_json() + "\n"
    path.write_text(line * (MAX_FILE_BYTES // len(line) + 1))
    RunHistory(path).append(record("now", {"a": "PASS"}))
    assert (outside / "target").read_text() == "outside\n"
    assert not path.is_symlink() and path.stat().st_size < MAX_FILE_BYTES
    assert path.read_text().splitlines()[-1] == record("now", {"a": "PASS"}).model_dump_json()
