"""The untouched reference stack passes every static check and gets GO."""

from harness import SuiteRun


def test_reference_stack_passes_every_static_check(stack_copy, run_static):
    run: SuiteRun = run_static(stack_copy)
    assert run.report is not None, run.stdout[-3000:]
    failing = {c: run.reasons(c) for c in run.failed_controls}
    assert not failing, failing
    assert set(run.statuses.values()) == {"PASS"}, run.statuses
    assert run.verdict == "GO"
    assert run.ret == 0
    for suffix in ("html", "md", "json"):
        assert (run.report_dir / f"validation-report.{suffix}").is_file()
