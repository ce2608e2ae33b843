"""The untouched reference stack passes every static check: STATIC PASS, the static gate, not a GO."""

from harness import SuiteRun


def test_reference_stack_passes_every_static_check(stack_copy, run_static):
    run: SuiteRun = run_static(stack_copy)
    assert run.report is not None, run.stdout[-3000:]
    failing = {c: run.reasons(c) for c in run.failed_controls}
    assert not failing, failing
    # Docker secrets mode: what compose declares is not what the container sees; only a live run proves it
    assert set(run.statuses.values()) == {"PASS", "LIVE ONLY"}, run.statuses
    assert run.statuses["docker_secrets_mode"] == "LIVE ONLY"
    assert run.passed and run.verdict == "STATIC PASS" and run.report["verdict"]["gate"] == "static"
    assert run.report["verdict"]["line"].endswith("not a deploy decision")
    assert run.ret == 0
    for suffix in ("html", "md", "json"):
        assert (run.report_dir / f"validation-report.{suffix}").is_file()
