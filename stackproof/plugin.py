"""The stackproof pytest plugin: options, markers, fixtures and the report.

Loaded by the root conftest.py. Options are registered here, in one place; the
run's state lives in objects stored on `config.stash`, never in globals.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .controls import BY_ID, default_docs_base
from .options import BY_NAME, OPTIONS
from .preflight import option_problems, stack_problems
from .errors import NOT_PROVEN_PREFIX, Blocked, NotDeclared, StackError
from .evidence import EVIDENCE_KEY, Evidence
from .io.readonly import changed_paths, fingerprint
from .redact import Redactor, ScrubbingFilter
from stackproof.report.collector import TargetInfo, ValidationReport, is_worker
from stackproof.report.files import real_report_dir
from stackproof.report.outcome import BlockedBy, LiveOnly, NotProven, NotRun
from stackproof.report.rows import RowRecorder
from stackproof.report.terminal import TerminalAnswer
from stackproof.report.waiving import WaiverOutcomes
from stackproof.io.sandbox import SandboxUnavailable
from stackproof.report.history import HISTORY_FILE, RunHistory, load_baseline
from stackproof.target.stack import Stack
from stackproof.report.waivers import load_waivers
from .watchdog import RunTimeout, RunWatchdog

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stackproof.engine.live import LiveStack
    from stackproof.resources.scripts import Monitor

STACK_KEY = pytest.StashKey[Stack]()
REPORT_KEY = pytest.StashKey[ValidationReport]()
RECORDER_KEY = pytest.StashKey[RowRecorder]()

REDACTION_KEY = "stackproof_redaction_key"  # workerinput: the controller's fingerprint key, for every worker
DEADLINE_KEY = pytest.StashKey[float]()
FINGERPRINT_KEY = pytest.StashKey[dict]()
SHOWN_CHANGES = 10  # changed paths named in the failure


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stackproof", "stackproof: validate an AI stack")
    for option in OPTIONS:
        if option.repeatable:
            group.addoption(option.flag, dest=option.name, action="append", default=[], metavar=option.metavar,
                            help=option.described())
        elif option.switch:
            group.addoption(option.flag, dest=option.name, action="store_true", default=False, help=option.described())
        else:
            group.addoption(option.flag, dest=option.name, default=None, metavar=option.metavar,
                            help=option.described())
            parser.addini(option.name, option.help, default=option.default)


def setting(config: pytest.Config, name: str) -> str:
    """A setting's value: command line, then environment, then ini file, then default."""
    value = config.getoption(name)
    if value is None:
        value = os.environ.get(BY_NAME[name].env) or config.getini(name)
    return str(value)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "static: check that reads only the stack's files")
    config.addinivalue_line("markers", "live: check against the running containers of the stack")
    config.addinivalue_line("markers", "control(id): the report control this check belongs to")
    config.addinivalue_line("markers", "remediation(severity, fix): how bad the check's failure is (critical, high, "
                            "medium) and what to do about it (stackproof/controls.py)")
    config.addinivalue_line("markers", "changes_stack: live check that changes the stack; runs only with --allow-changes")
    config.addinivalue_line("markers", "live_selftest: suite self-test that needs the running reference stack")
    started = time.monotonic()  # the run's clock: configuration reads the stack too, and is bounded with it
    workerinput = getattr(config, "workerinput", {})
    redactor = Redactor(bytes.fromhex(workerinput[REDACTION_KEY]) if REDACTION_KEY in workerinput else None)
    env_files = config.getoption("env_files") or []
    # the controller finds the usage errors (the workers start only once there are none)
    problems = [] if is_worker(config) else option_problems(lambda name: setting(config, name), env_files)
    stack_dir = Path(setting(config, "stack_dir")).expanduser().resolve()
    operator_profile = setting(config, "profile")
    stack = Stack(stack_dir, float(setting(config, "stack_timeout")) if not problems else 20.0, redactor,
                  [Path(p).expanduser().resolve() for p in env_files],
                  operator_profile=Path(operator_profile).expanduser().resolve() if operator_profile else None,
                  strict=config.getoption("strict_profile"), trust_stack_code=config.getoption("trust_stack_code"),
                  env_names=config.getoption("env_names"))
    report_dir = real_report_dir(Path(os.path.abspath(Path(setting(config, "report_dir")).expanduser())), stack_dir)
    project = setting(config, "compose_project") or None
    docs_url = setting(config, "docs_url")
    report = ValidationReport(config, report_dir, lambda: describe_target(stack, project), redactor,
                              target_errors=lambda: stack.target_errors, profile=lambda: describe_profile(stack),
                              docs_base=docs_url.rstrip("/") + "/" if docs_url else default_docs_base())
    report.engine = setting(config, "engine") or None
    if setting(config, "sarif"):
        report.files.copies["sarif"] = Path(os.path.abspath(Path(setting(config, "sarif")).expanduser()))
    if not is_worker(config):  # the controller judges the waivers and keeps the history (workers report rows)
        problems += stack_problems(stack) + set_up_waivers_and_history(config, report, stack)
    if problems:  # one line each, no report, no check run: the stack was not judged
        raise pytest.UsageError(*problems)
    config.stash[DEADLINE_KEY] = started + float(setting(config, "run_timeout"))
    config.stash[STACK_KEY] = stack
    config.stash[REPORT_KEY] = report
    config.pluginmanager.register(report, "stackproof-report")
    recorder = RowRecorder(redactor, target_errors=lambda: stack.target_errors)
    config.stash[RECORDER_KEY] = recorder
    config.pluginmanager.register(recorder, "stackproof-rows")
    if not is_worker(config):  # the controller judges the waivers, and tells the answer
        config.pluginmanager.register(WaiverOutcomes(report.waivers, report.control_of, redactor), "stackproof-waivers")
        config.pluginmanager.register(TerminalAnswer(config, lambda: report.summary, lambda: report.written),
                                      "stackproof-terminal")
    watchdog = None
    if not is_worker(config):  # the controller bounds the run; ending it ends its workers
        stack_timeout = float(setting(config, "stack_timeout"))
        watchdog = RunWatchdog(float(setting(config, "run_timeout")), max(10.0, 2 * stack_timeout),
                               report.write_interrupted, started)
        config.pluginmanager.register(watchdog, "stackproof-watchdog")
    learn_secrets(stack, report, watchdog)
    if config.pluginmanager.hasplugin("html"):
        from stackproof.report.html_summary import HtmlSummary

        config.pluginmanager.register(HtmlSummary(report, redactor.clean(str(stack_dir))), "stackproof-html-summary")


def learn_secrets(stack: Stack, report: ValidationReport, watchdog: RunWatchdog | None) -> None:
    """Teach the redactor the stack's secrets before anything is printed. A stack whose files break that
    (a secrets dir nested past the recursion limit, an oversized .env, more secrets than the redactor can
    learn) is a run error named in the report, not an INTERNALERROR that leaves no report (or the last
    run's) behind; the checks then meet the same files and fail on them. The controller reads them within
    the run's deadline (`--run-timeout`): past it, the run error says so, and the checks are not run."""
    try:
        with watchdog.bounded() if watchdog is not None else nullcontext():
            stack.register_secrets()
    except RunTimeout as exc:
        report.add_session_error(f"the stack's secrets could not all be read before the checks: {exc}")
    except (StackError, RecursionError, OSError, ValueError, UnicodeError) as exc:
        kind = "" if isinstance(exc, StackError) else f"{type(exc).__name__}: "
        report.add_session_error(f"the stack's secrets could not all be read before the checks: "
                                 f"{kind}{stack.redactor.clean(str(exc), limit=300)}")


def set_up_waivers_and_history(config: pytest.Config, report: ValidationReport, stack: Stack) -> list[str]:
    """The run's waivers (--waivers, else the stack dir's waivers.yml) and history (--history, else
    history.jsonl in the report dir; --baseline to compare with instead). Returns the usage errors: a waiver
    file or baseline that cannot be used. A waiver file refused as the stack's own is a session error (NO-GO)."""
    problems = []
    report.waivers = load_waivers(stack.root, setting(config, "waivers"), config.getoption("strict_profile"),
                                  report.started.date())
    if report.waivers.error:
        if report.waivers.refused:
            report.add_session_error(report.waivers.error)
        else:
            problems.append(report.waivers.error)
    baseline = None
    if setting(config, "baseline"):
        try:
            baseline = load_baseline(Path(setting(config, "baseline")).expanduser().absolute())
        except StackError as exc:
            problems.append(str(exc))
    history = setting(config, "history")
    path = Path(history).expanduser().absolute() if history else report.report_dir / HISTORY_FILE
    if not config.getoption("no_history") or baseline is not None:
        report.history = RunHistory(None if config.getoption("no_history") else path, baseline)
    return problems


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist controller: every worker fingerprints with the controller's key, so equal values compare equal."""
    node.workerinput[REDACTION_KEY] = node.config.stash[STACK_KEY].redactor.key.hex()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate the checks' markers; leave out the checks that change the stack unless --allow-changes,
    and run them after every other check: a change that goes wrong (a breaker left open, a key not
    put back) then fails its own control, not the read-only checks of another one."""
    if not config.getoption("allow_changes"):
        changing = [item for item in items if item.get_closest_marker("changes_stack")]
        if changing:
            config.hook.pytest_deselected(items=changing)
            items[:] = [item for item in items if not item.get_closest_marker("changes_stack")]
    items.sort(key=lambda item: item.get_closest_marker("changes_stack") is not None)  # stable: order kept otherwise
    for item in items:
        marker = item.get_closest_marker("control")
        if marker is None:
            continue
        if not marker.args or marker.args[0] not in BY_ID:
            raise pytest.UsageError(f"{item.nodeid}: unknown control {marker.args!r}")
        if bool(item.get_closest_marker("static")) == bool(item.get_closest_marker("live")):
            raise pytest.UsageError(f"{item.nodeid}: a check is marked either static or live")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fingerprint the stack dir (read-only, enforced at the end); scrub every log
    record before pytest's log handlers write it."""
    root = session.config.stash[STACK_KEY].root
    if root.is_dir():
        session.config.stash[FINGERPRINT_KEY] = fingerprint(root, written_by_the_run(session.config))
    logging_plugin = session.config.pluginmanager.get_plugin("logging-plugin")
    scrubbing = ScrubbingFilter(session.config.stash[STACK_KEY].redactor)
    for name in ("caplog_handler", "report_handler", "log_file_handler", "log_cli_handler"):
        handler = getattr(logging_plugin, name, None)
        if handler is not None:
            handler.addFilter(scrubbing)


@pytest.hookimpl(wrapper=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_read_only(session: pytest.Session):
    """Before the report is written (a wrapper runs before every plain sessionfinish hook, the report's
    included): a run that changed the stack dir fails, naming the paths."""
    report = session.config.stash[REPORT_KEY]
    before = session.config.stash.get(FINGERPRINT_KEY, None)
    if before is not None:
        changed = changed_paths(before, fingerprint(session.config.stash[STACK_KEY].root,
                                                    written_by_the_run(session.config)))
        if changed:
            more = f" and {len(changed) - SHOWN_CHANGES} more" if len(changed) > SHOWN_CHANGES else ""
            report.add_session_error(
                f"the run changed the stack dir (read-only): {', '.join(changed[:SHOWN_CHANGES])}{more}")
    return (yield)


def written_by_the_run(config: pytest.Config) -> tuple[Path, ...]:
    """What the run itself writes (the report dir, JUnit, the history file): left out of the read-only
    fingerprint where the operator puts it inside the stack dir (a CI checkout's `reports/`)."""
    report = config.stash[REPORT_KEY]
    paths = [report.report_dir]
    if getattr(config.option, "xmlpath", None):
        paths.append(Path(os.path.abspath(config.option.xmlpath)))
    if report.history is not None and report.history.path is not None:
        paths.append(Path(os.path.abspath(report.history.path)))
    return tuple(paths)


def describe_target(stack: Stack, project: str | None) -> TargetInfo:
    """What the report says about the target; read at the end, when the checks have loaded the stack.
    A part that cannot be read is named as such (the checks report why)."""
    if not stack.root.is_dir():
        return TargetInfo(str(stack.root), None, project, None)
    try:
        profile = stack.profile.source
    except StackError:
        profile = "unusable (see the profile error)"
    except Exception as exc:
        profile = f"unreadable: {type(exc).__name__}"
    loader = None
    try:
        model = stack.compose
        loader = model.loader_note + (f"; profiles: {', '.join(model.profiles)}" if model.profiles else "")
    except Exception as exc:
        model = None
        loader = f"compose model unreadable: {type(exc).__name__}"
    if project is None:
        project = model.name if model is not None else "unreadable"
    files = [stack.rel(path) for path in model.files] if model is not None else []
    return TargetInfo(str(stack.root), stack.git_commit(), project, profile, loader, files)


def describe_profile(stack: Stack) -> dict:
    """What the report says about the profile: its sources, every value that differs from the
    defaults, and those that weaken a threshold (see stackproof/profile.py)."""
    if not stack.root.is_dir():
        return {"source": None, "error": "stack dir not found", "changed": [], "weakened": [], "ignored": []}
    try:
        return stack.profile.summary()
    except StackError as exc:
        return {"source": None, "error": str(exc), "changed": [], "weakened": [], "ignored": []}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Bound the whole run: every single step is bounded, and so is their sum. Tell the stack which
    check runs, so that an input it finds broken blocks (not fails) the later checks that need it.

    A check due to start past the deadline stops the run as the watchdog's alarm does (INCOMPLETE, the
    checks left not run, never failed): the alarm is lost when it lands in a finalizer, where Python
    reports the exception it raises as unraisable and carries on."""
    item.config.stash[STACK_KEY].current_check = item.name
    if item.get_closest_marker("control") and time.monotonic() > item.config.stash[DEADLINE_KEY]:
        watchdog = item.config.pluginmanager.get_plugin("stackproof-watchdog")
        if watchdog is not None:
            watchdog.expire()
        raise RunTimeout(f"run time limit of {setting(item.config, 'run_timeout')}s reached")  # an xdist worker


@pytest.hookimpl(wrapper=True, specname="pytest_runtest_setup")
def pytest_runtest_setup_not_run(item: pytest.Item):
    """A check (or a fixture of it) stopped by a signal of the layers below becomes the `NotRun` it means."""
    try:
        return (yield)
    except (Blocked, NotDeclared, SandboxUnavailable) as exc:
        raise not_run_of(item, exc) from None


@pytest.hookimpl(wrapper=True, specname="pytest_runtest_call")
def pytest_runtest_call_not_run(item: pytest.Item):
    try:
        return (yield)
    except (Blocked, NotDeclared, SandboxUnavailable) as exc:
        raise not_run_of(item, exc) from None


def not_run_of(item: pytest.Item, exc: Blocked | NotDeclared | SandboxUnavailable) -> NotRun:
    """The one translation of the layers' signals into outcomes: an input an earlier check found broken
    (`Blocked`) blocks the check; an input the stack does not have (`NotDeclared`) leaves it not proven,
    saying what the stack lacks; stack code that needs a sandbox where none is available leaves it not
    proven, and the run as a whole not GO (a session error)."""
    if isinstance(exc, Blocked):
        return BlockedBy(exc.by, exc.reason)
    if isinstance(exc, NotDeclared):
        return NotProven(NOT_PROVEN_PREFIX + str(exc))
    report = item.config.stash[REPORT_KEY]
    if str(exc) not in report.session_errors:
        report.add_session_error(str(exc))
    return NotProven(str(exc))


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Stack:
    """The stack under test (see stackproof/target.py)."""
    target = request.config.stash[STACK_KEY]
    target.require()
    return target


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
    """Record what this check looked at; it becomes the check's row in the report."""
    record = Evidence()
    request.node.stash[EVIDENCE_KEY] = record
    return record


@pytest.fixture(scope="session")
def monitor(stack: Stack) -> Iterator[Monitor]:
    """The stack's TLS monitor script in its sandbox, one for every check that runs it (TLS monitoring, the TLS
    alerts' metrics): each run is made once, so a hanging script costs one timeout. Run whatever its exec bit:
    test_monitor_script_is_executable judges that, and the scenarios judge what the script does."""
    from stackproof.resources.scripts import Monitor

    runner = Monitor(stack, force_executable=True)
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def target_engine(request: pytest.FixtureRequest) -> str | None:
    """The engine --engine names (compose, swarm, podman), None when not given (live runs detect it)."""
    return setting(request.config, "engine") or None


@pytest.fixture(scope="session")
def live(request: pytest.FixtureRequest, stack: Stack) -> LiveStack:
    """The running stack (see stackproof/live.py). Skips the live checks when no engine or
    compose project is reachable, or fails them when --live says they must run.
    Imported here, not at the top: a static run needs neither the Docker SDK nor an HTTP client."""
    from stackproof.engine.live import LiveStack, LiveUnavailable, project_name

    project = project_name(stack, setting(request.config, "compose_project") or None)
    try:
        live_stack = LiveStack.connect(stack, project, setting(request.config, "engine"))
        recorder = request.config.stash[RECORDER_KEY]
        recorder.engine, recorder.engine_version = live_stack.engine.name, live_stack.engine_version()
        return live_stack
    except LiveUnavailable as exc:
        if request.config.getoption("live"):
            pytest.fail(f"--live: {exc}")
        raise LiveOnly(str(exc)) from None
