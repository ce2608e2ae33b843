"""Loads the stackproof plugin for every run from this repository
(and pytester, which the suite's own tests in tests/ use to run `pytest suites/`)."""

pytest_plugins = ["stackproof.plugin", "pytester"]
