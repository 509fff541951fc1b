"""Execution: a venv per package version, pinned installs, streamed subprocess runs."""
