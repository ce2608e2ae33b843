"""The options the suite adds to pytest, declared once: the plugin registers them, and
`stackproof validate --help` lists them, grouped, with their defaults and environment variables.

A value option is read from the command line, then its environment variable, then the ini
file, then its default (`plugin.setting`). A switch is a command-line flag only.
"""

from __future__ import annotations

from dataclasses import dataclass

from stackproof import bundle

GROUPS = {
    "target": "the stack and how it is reached",
    "run": "what the run may do",
    "report": "reports, history and waivers",
}


@dataclass(frozen=True)
class Option:
    name: str  # the dest; the flag is --name with dashes
    group: str  # a key of GROUPS
    help: str
    env: str = ""  # value options: the environment variable
    default: str | None = None  # value options: the ini default (None: a switch)
    shown_default: str = ""  # the default as a person reads it, when it is not `default` itself
    metavar: str = "VALUE"
    repeatable: bool = False  # given several times, each value kept (a list)
    spelt: str = ""  # the flag, when it is not --name with dashes

    @property
    def flag(self) -> str:
        return self.spelt or "--" + self.name.replace("_", "-")

    @property
    def switch(self) -> bool:
        return self.default is None and not self.repeatable

    def described(self) -> str:
        """The help text with where else the value comes from and its default."""
        if self.switch or self.repeatable:
            return self.help
        default = self.shown_default or self.default or "none"
        return f"{self.help} (default: {default}; also ${self.env} or ini '{self.name}')"


OPTIONS = (
    Option("stack_dir", "target", "root of the deployment repository to validate", "STACKPROOF_STACK_DIR",
           str(bundle.reference_stack_dir()), "the bundled reference stack", "DIR"),
    Option("compose_project", "target", "compose project of the running stack, for the live checks",
           "STACKPROOF_COMPOSE_PROJECT", "", "the compose file's name", "NAME"),
    Option("engine", "target", "engine running the stack for the live checks: compose, swarm or podman",
           "STACKPROOF_ENGINE", "", "detected", "ENGINE"),
    Option("profile", "target", "an operator's profile, outside the stack dir: its values win over the stack's own "
           "stackproof.yml", "STACKPROOF_PROFILE", "", "none", "PATH"),
    Option("strict_profile", "target", "the stack cannot lower its own bar: of its stackproof.yml only where its files "
           "are applies (no threshold, no key that decides what is checked: give those with --profile), and a waiver "
           "file inside the stack dir is refused"),
    Option("env_files", "target", "an env file for the compose model, as `docker compose --env-file` (repeatable; "
           "replaces the default .env, like Compose); the profile's compose.env_files come first",
           metavar="PATH", repeatable=True, spelt="--env-file"),
    Option("env_names", "target", "a variable of this environment the compose model may interpolate (repeatable); "
           "no other variable reaches Compose but COMPOSE_PROFILES, and every passed value is redacted from the reports",
           metavar="NAME", repeatable=True, spelt="--env"),
    Option("live", "run", "live checks must run: fail them, instead of skipping, when no engine or compose project "
           "is reachable"),
    Option("allow_changes", "run", "allow the checks that change the running stack (live API key rotation, "
           "circuit-breaker fault injection); they restore what they change"),
    Option("trust_stack_code", "run", "run the stack's scripts even where no sandbox (bubblewrap) is available: "
           "only for a stack you trust"),
    Option("stack_timeout", "run", "seconds allowed for each subprocess, docker exec, HTTP call and query",
           "STACKPROOF_TIMEOUT", "20", metavar="SECONDS"),
    Option("run_timeout", "run", "seconds allowed for the whole run: then it is interrupted and its report is "
           "INCOMPLETE (NO-GO)", "STACKPROOF_RUN_TIMEOUT", "900", metavar="SECONDS"),
    Option("report_dir", "report", "where validation-report.{html,md,json,sarif} are written", "STACKPROOF_REPORT_DIR",
           "reports", "reports/ in the current directory", "DIR"),
    Option("sarif", "report", "also write the SARIF log to PATH (for a code-scanning upload step), each time the "
           "report is written", "STACKPROOF_SARIF", "", "validation-report.sarif in the report dir only", "PATH"),
    Option("docs_url", "report", "where the controls' pages (docs/controls/<control>.md) are published: each check "
           "of the reports links to <URL><control>.md#<check>", "STACKPROOF_DOCS_URL", "",
           "the copy installed with stackproof (a file: URL)", "URL"),
    Option("waivers", "report", "the waiver file: failures accepted until a date", "STACKPROOF_WAIVERS", "",
           "waivers.yml in the stack dir, if present", "PATH"),
    Option("history", "report", "the history file each run appends a line to, and compares with",
           "STACKPROOF_HISTORY", "", "history.jsonl in the report dir", "PATH"),
    Option("no_history", "report", "neither read nor append the history file (a --baseline is still compared with)"),
    Option("baseline", "report", "an earlier JSON report to compare the run with, instead of the history's previous "
           "run of the target", "STACKPROOF_BASELINE", "", "none", "PATH"),
)
BY_NAME = {option.name: option for option in OPTIONS}
FLAGS = {option.flag for option in OPTIONS}
