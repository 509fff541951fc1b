"""`kirby adduser` as a user runs it: the real console script, in a subprocess.

The interactive dialogue goes through a pseudo-terminal that is the child's controlling terminal,
because a hidden password prompt (getpass) reads from the terminal, not from a pipe.
"""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from sqlalchemy import select as sql_select

from kirby.config import load_settings
from kirby.db import open_database
from kirby.models import Role, User
from kirby.users import verify_password

KIRBY = Path(sys.executable).parent / "kirby"
TIMEOUT = 120  # seconds per expected prompt; a cold start on a loaded 2-core machine is slow


@pytest.fixture
def kirby_env(tmp_path: Path) -> dict[str, str]:
    assert KIRBY.is_file(), f"the console script {KIRBY} is missing: install the package (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIRBY_", "KAFKA_", "EXT_", "SQLALCHEMY_"))}
    env.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'kirby.db'}", SECURITY_PASSWORD_SALT="pepper")
    return env


def stored_users(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, User], object]:
    settings = load_settings(environ=env, cwd=tmp_path)
    database = open_database(settings)
    try:
        with database.session() as session:
            return {u.username: u for u in session.scalars(sql_select(User))}, settings
    finally:
        database.dispose()


class Terminal:
    """A child process on a pseudo-terminal, with a bounded ``expect``."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path):
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the pty becomes /dev/tty
        )
        os.close(slave)
        self.transcript = b""

    def expect(self, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while text.encode() not in self.transcript:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"after {TIMEOUT} s, no {text!r} in the terminal: {self.transcript!r}")
            if select.select([self.master], [], [], remaining)[0]:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the terminal closed before {text!r}: {self.transcript!r}")
                self.transcript += chunk

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def close(self) -> int:
        code = self.process.wait(timeout=TIMEOUT)
        os.close(self.master)
        return code

    def text(self) -> str:
        return self.transcript.decode().replace("\r\n", "\n")


@pytest.mark.slow
def test_interactive_dialogue_through_a_terminal(tmp_path: Path, kirby_env):
    terminal = Terminal([str(KIRBY), "adduser", "alice"], kirby_env, tmp_path)
    try:
        terminal.expect("Password: ")
        terminal.type("s3cret-passphrase")
        terminal.expect("Repeat for confirmation: ")
        terminal.type("s3cret-passphrase")
        terminal.expect("Give admin rights? [y/N]: ")
        terminal.type("y")
        terminal.expect("User alice added with admin rights")
    finally:
        code = terminal.close()
    assert code == 0
    assert terminal.text() == (
        "Password: \nRepeat for confirmation: \nGive admin rights? [y/N]: y\nUser alice added with admin rights\n"
    )  # exactly the guide's dialogue, and the password never echoed
    users, settings = stored_users(tmp_path, kirby_env)
    assert users["alice"].role == Role.ADMIN
    assert verify_password(users["alice"].password_hash, "s3cret-passphrase", settings)


@pytest.mark.slow
def test_password_stdin_and_duplicate_refusal(tmp_path: Path, kirby_env):
    def adduser(*args: str, stdin: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(KIRBY), "adduser", *args],
            input=stdin,
            env=kirby_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    created = adduser("robot", "--password-stdin", stdin="from-a-script\n")
    assert (created.returncode, created.stdout) == (0, "User robot added with viewer rights\n"), created.stderr
    duplicate = adduser("robot", "--password-stdin", "--admin", stdin="another-passphrase\n")
    assert duplicate.returncode == 1
    assert duplicate.stderr == "Error: user 'robot' already exists; choose another name\n"
    empty = adduser("empty", "--password-stdin", stdin="\n")
    assert empty.returncode == 1
    assert empty.stderr == "Error: refusing an empty password for user 'empty'; choose a password\n"
    users, settings = stored_users(tmp_path, kirby_env)
    assert list(users) == ["robot"] and users["robot"].role == Role.VIEWER
    assert verify_password(users["robot"].password_hash, "from-a-script", settings)
