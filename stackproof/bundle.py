"""Where stackproof's own files are: the suites, the reference stack, the user-run ini.

Two layouts carry them. In a checkout (and an editable install) they are the repo's
`suites/` and `stack/`, the layout the design card names. In an installed wheel,
pyproject.toml maps them into the package as `stackproof/suites/` and
`stackproof/reference_stack/`. The reference stack needs generated secrets beside
its files (stack/scripts/setup.sh writes them into the stack dir); an installed
package must not write into site-packages, so there the reference stack is used from
a copy in the user's data dir (`$STACKPROOF_HOME/stack`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
SUITE_INI = PACKAGE_DIR / "suite.ini"
"""The pytest ini of a user run (`stackproof validate`); see the file for why."""


def in_checkout() -> bool:
    """True when this package is the one in a source checkout (run in place or installed with -e)."""
    return (CHECKOUT_DIR / "pyproject.toml").is_file() and (CHECKOUT_DIR / "suites").is_dir()


def suites_dir() -> Path:
    """The directory `pytest` collects: one test file per control."""
    return CHECKOUT_DIR / "suites" if in_checkout() else PACKAGE_DIR / "suites"


def control_docs_dir() -> Path:
    """The controls' pages (docs/controls/<control>.md), which the reports link each check to."""
    return CHECKOUT_DIR / "docs" / "controls" if in_checkout() else PACKAGE_DIR / "control_docs"


def bundled_stack_dir() -> Path:
    """The reference stack's files as shipped (no secrets: setup.sh generates them)."""
    return CHECKOUT_DIR / "stack" if in_checkout() else PACKAGE_DIR / "reference_stack"


def stackproof_home() -> Path:
    """Where an installed stackproof keeps its working copy of the reference stack."""
    configured = os.environ.get("STACKPROOF_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local/share")
    return Path(data).expanduser().resolve() / "stackproof"


def reference_stack_dir() -> Path:
    """The reference stack runs from here: the checkout's `stack/`, or the installed
    package's working copy (see `materialize_reference_stack`)."""
    return bundled_stack_dir() if in_checkout() else stackproof_home() / "stack"


def materialize_reference_stack() -> Path:
    """Make `reference_stack_dir()` hold the bundled reference stack's files.

    In a checkout it is the bundled stack itself. Installed, the shipped files are copied
    over the working copy on every call, so an upgrade brings new files; what setup.sh
    generated there (secrets, certificate, .env) is not in the bundle and stays."""
    target = reference_stack_dir()
    source = bundled_stack_dir()
    if target != source:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return target
