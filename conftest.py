"""Loads the stackproof plugin for every run from this repository."""

pytest_plugins = ["plugins.stackproof"]
