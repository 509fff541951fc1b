"""The installer's failures become one clear message; its commands are argument lists."""

from pathlib import Path

import pytest

from kirby.errors import PackageError
from kirby.tasks.install import Installer

UV_NOT_FOUND = """error: No solution found when resolving dependencies:
  Because kirby-example-nope was not found in the package registry and you require kirby-example-nope==1.0.0,
  we can conclude that your requirements are unsatisfiable."""
UV_UNREACHABLE = """error: Request failed after 3 retries in 6.3s
  cause: Failed to fetch: http://127.0.0.1:9/simple/kirby-example-hello/
  cause: tcp connect error
  cause: Connection refused (os error 111)"""
PIP_UNREACHABLE = """WARNING: Retrying (Retry(total=0...)) after connection broken by 'NewConnectionError(
"HTTPConnection(host='127.0.0.1', port=9): Failed to establish a new connection: [Errno 111] Connection refused")'
ERROR: Could not find a version that satisfies the requirement kirby-example-hello==1.0.0 (from versions: none)
ERROR: No matching distribution found for kirby-example-hello==1.0.0"""
PIP_NOT_FOUND = """ERROR: Could not find a version that satisfies the requirement kirby-example-nope==1.0.0 (from versions: none)
ERROR: No matching distribution found for kirby-example-nope==1.0.0"""

INDEX = "http://127.0.0.1:9/simple/"


@pytest.mark.parametrize(
    "output, message",
    [
        (
            UV_NOT_FOUND,
            f"package 'kirby-example-nope'==1.0.0 is not on the package index {INDEX}: check the name and version, or upload it",
        ),
        (
            PIP_NOT_FOUND,
            f"package 'kirby-example-nope'==1.0.0 is not on the package index {INDEX}: check the name and version, or upload it",
        ),
        (UV_UNREACHABLE, f"the package index {INDEX} cannot be reached: start it or fix KIRBY_PACKAGE_INDEX"),
        (PIP_UNREACHABLE, f"the package index {INDEX} cannot be reached: start it or fix KIRBY_PACKAGE_INDEX"),
        (
            "error: something else",
            f"could not install kirby-example-nope==1.0.0 from {INDEX} with uv: see the installer's output",
        ),
    ],
)
def test_installer_failures_are_explained(output, message):
    assert Installer(index=INDEX, uv="uv")._explain("kirby-example-nope==1.0.0", output) == message


def test_a_failing_command_raises_package_error_with_its_output(tmp_path, monkeypatch):
    monkeypatch.setenv("UV_INDEX_URL", "http://evil.invalid/")
    monkeypatch.setenv("PIP_INDEX_URL", "http://evil.invalid/")
    fake = tmp_path / "fake-uv"
    fake.write_text(
        f"#!/bin/sh\necho 'env:' $(env | sort | tr '\\n' ' ')\necho \"{UV_NOT_FOUND.splitlines()[1]}\"\nexit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(PackageError, match="is not on the package index") as error:
        Installer(index=INDEX, uv=str(fake)).build(tmp_path / "venv", "Kirby-Example-Nope", "1.0.0")
    assert "was not found in the package registry" in error.value.output
    env = error.value.output.splitlines()[0]
    assert "UV_NO_CONFIG=1" in env and "PIP_CONFIG_FILE=/dev/null" in env and "evil" not in env
    assert not Path(tmp_path / "venv").exists()


def test_the_index_credentials_never_reach_messages_output_or_logs(tmp_path, caplog):
    """A real uv against an unreachable index with user:password: the error, the installer's
    output (uv prints the URL it failed on) and Kirby's log hold *** instead of the password."""
    from kirby.tasks.install import find_uv

    index = "http://builder:pa%24%24w0rd-xyz@127.0.0.1:9/simple/"
    caplog.set_level("INFO")
    with pytest.raises(PackageError) as error:
        Installer(index=index, uv=find_uv()).build(tmp_path / "venv", "kirby-example-hello", "1.0.0")
    shown = str(error.value) + error.value.output + caplog.text + repr(Installer(index=index, uv=None))
    assert "http://builder:***@127.0.0.1:9/simple/ cannot be reached" in str(error.value)
    assert "pa%24%24w0rd-xyz" not in shown and "pa$$w0rd-xyz" not in shown
