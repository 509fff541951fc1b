"""Who runs run as, the start-up refusals and checks, the protections line, and non-dumpability."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from kirby import hardening
from kirby.errors import ConfigError
from kirby.tasks.isolation import (
    RunIdentity,
    RunLimits,
    check_run_access,
    describe,
    readable_by,
    run_identity,
    unreachable_parent,
)
from tests.isolation import open_folder

ME = pwd.getpwuid(os.geteuid())
OTHER = RunIdentity("someone", 54321, 54321, (54321,), "/nonexistent", switch=True)


def test_a_root_supervisor_refuses_root_runs_naming_both_variables(make_settings):
    with pytest.raises(ConfigError) as error:
        run_identity(make_settings(KIRBY_ALLOW_ROOT_RUNS="false"), euid=0)
    message = str(error.value)
    assert "runs as root and KIRBY_RUN_USER is unset" in message and "KIRBY_ALLOW_ROOT_RUNS=true" in message
    allowed = run_identity(make_settings(KIRBY_ALLOW_ROOT_RUNS="true"), euid=0)
    assert (allowed.uid, allowed.switch, allowed.is_root) == (0, False, True)
    assert "AS ROOT" in describe(allowed, RunLimits(), non_dumpable=True)


def test_without_run_user_a_non_root_supervisor_runs_scripts_as_itself_and_says_so(make_settings):
    nobody = pwd.getpwnam("nobody")
    who = run_identity(make_settings(), euid=nobody.pw_uid)
    assert (who.user, who.uid, who.switch) == ("nobody", nobody.pw_uid, False)
    line = describe(who, RunLimits(memory=1024), non_dumpable=True)
    assert "as the supervisor's own user" in line and "set KIRBY_RUN_USER" in line
    assert "Kirby processes non-dumpable" in line and "not private from each other" in line
    assert "venvs owned by the same user (not protected)" in line and "limits: memory 1024" in line


def test_the_run_user_must_exist_be_unprivileged_and_switching_needs_root(make_settings):
    with pytest.raises(ConfigError, match="KIRBY_RUN_USER='nobody-kirby-x': no such user; create it"):
        run_identity(make_settings(KIRBY_RUN_USER="nobody-kirby-x"), euid=0)
    with pytest.raises(ConfigError, match="KIRBY_RUN_USER='root' is root"):
        run_identity(make_settings(KIRBY_RUN_USER="root"), euid=0)
    nobody = pwd.getpwnam("nobody")
    with pytest.raises(ConfigError, match="needs a supervisor started as root"):
        run_identity(make_settings(KIRBY_RUN_USER="nobody"), euid=nobody.pw_uid + 1)
    who = run_identity(make_settings(KIRBY_RUN_USER="nobody"), euid=0)
    assert (who.uid, who.gid, who.switch) == (nobody.pw_uid, nobody.pw_gid, True)
    assert "scripts run as nobody" in describe(who, RunLimits(), non_dumpable=True)
    assert not run_identity(make_settings(KIRBY_RUN_USER="nobody"), euid=nobody.pw_uid).switch  # already it


@pytest.fixture
def open_root():
    """A folder every user may search (pytest's own tmp_path sits under a 0700 folder)."""
    folder = open_folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_permission_bits_decide_what_another_user_reaches(open_root):
    folder = open_root / "state"
    folder.mkdir()
    secret = folder / "file"
    secret.write_text("x")
    os.chmod(folder, 0o711)
    os.chmod(secret, 0o644)
    assert readable_by(secret, OTHER)
    os.chmod(secret, 0o600)
    assert not readable_by(secret, OTHER)
    os.chmod(folder, 0o700)
    assert unreachable_parent(folder / "venvs", OTHER) == folder


def test_kirby_s_own_readable_state_is_tightened(make_settings, open_root, monkeypatch):
    monkeypatch.chdir(open_root)
    (open_root / ".env").write_text("SECRET_KEY=x\n")
    os.chmod(open_root / ".env", 0o644)
    settings = make_settings(
        KIRBY_EMBEDDED_PATH=str(open_root / "embedded.db"),
        KIRBY_VENV_DIRECTORY=str(open_root / "venvs"),
        KIRBY_RUN_DIRECTORY=str(open_root / "runs"),
    )
    (open_root / "embedded.db").write_text("db")
    os.chmod(open_root / "embedded.db", 0o644)
    tightened = check_run_access(settings, OTHER, "/usr/bin/env")
    assert tightened == [str(open_root / ".env"), str(open_root / "embedded.db")]
    assert [oct((open_root / n).stat().st_mode & 0o777) for n in (".env", "embedded.db")] == ["0o600", "0o600"]
    assert check_run_access(settings, OTHER, "/usr/bin/env") == []


def test_a_venv_directory_out_of_the_run_user_s_reach_is_refused(make_settings, tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    settings = make_settings(KIRBY_VENV_DIRECTORY=str(private / "venvs"))
    with pytest.raises(ConfigError, match=r"KIRBY_VENV_DIRECTORY: .* is out of reach of the run user someone"):
        check_run_access(settings, OTHER, "/usr/bin/env")


HOLD = "\nimport sys, time\nif sys.argv[1] == 'harden':\n    harden_process()\nprint('ready', flush=True)\ntime.sleep(60)\n"


@pytest.mark.parametrize("harden", [True, False])
def test_a_non_dumpable_process_s_environment_is_refused_to_its_own_uid(harden):
    """kirby/hardening.py run standalone (its source, as the reaper's is) by the run user: a second
    process of the same uid reads its /proc/<pid>/environ only when it did not harden itself."""
    from tests.isolation import run_python, run_user

    user = run_user()
    python = run_python()
    source = Path(hardening.__file__).read_text().replace("from __future__ import annotations", "") + HOLD
    target = subprocess.Popen(
        [python, "-c", source, "harden" if harden else "plain"],
        env={"CANARY": "canary-value-xyz"},
        stdout=subprocess.PIPE,
        text=True,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
    )
    try:
        assert target.stdout.readline().strip() == "ready"
        probe = subprocess.run(
            [python, "-c", f"print(open('/proc/{target.pid}/environ', 'rb').read())"],
            capture_output=True,
            text=True,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            timeout=60,
        )
    finally:
        target.kill()
        target.wait()
    if harden:
        assert "PermissionError" in probe.stderr and "canary" not in probe.stdout
    else:
        assert "canary-value-xyz" in probe.stdout, probe.stderr


def test_harden_process_sets_umask_077(tmp_path):
    done = subprocess.run(
        [
            "python3",
            "-c",
            Path(hardening.__file__).read_text().replace("from __future__ import annotations", "")
            + "\nimport os\nprint(harden_process(), oct(os.umask(0)))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.split() == ["True", "0o77"], done.stderr


def test_missing_venv_and_run_directories_are_created_searchable(make_settings, open_root):
    old = os.umask(0o077)  # as in kirby's processes
    try:
        settings = make_settings(
            KIRBY_EMBEDDED_PATH=str(open_root / "embedded.db"),
            KIRBY_VENV_DIRECTORY=str(open_root / "state" / "venvs"),
            KIRBY_RUN_DIRECTORY=str(open_root / "state" / "runs"),
        )
        check_run_access(settings, OTHER, "/usr/bin/env")
    finally:
        os.umask(old)
    for name in ("state", "state/venvs", "state/runs"):
        assert oct((open_root / name).stat().st_mode & 0o777) == "0o711", name
