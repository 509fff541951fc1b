"""Secret isolation with a real `kirby web`, a real `kirby supervisor` started as root, and a run user.

Three daemons run as the run user ``kirby-run-test`` (see tests/isolation.py):

* job A (kirby-example-daemon) holds two secrets: a one-line value and a PEM-like key;
* job B (kirby-example-prober) tries, while A runs, to read ``/proc/<pid>/environ`` and
  ``/proc/<pid>/mem`` of A's script and reaper (same uid as B: only non-dumpability stops it), of
  the supervisor and of the web server; to read the settings file (.env), the embedded database and
  the script database; to list the run and venv directories; to write into A's venv;
* job C (the prober too) prints A's secret values, as a script would that stole them.

Guarantees checked: every attempt of B fails and nothing of A, of the settings or of the API token
reaches B's log; A's secrets are masked in C's log (a supervisor masks every job's secrets, the PEM
key line by line); B's working directory and TMPDIR are private to the run user; .env, the
databases and the embedded file are 0600; the supervisor logs the protections it runs with.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest

from kirby.config import load_settings
from kirby.db import open_database
from kirby.logstore import stored_lines
from kirby.models import ConfigKey, ConfigScope, Job, RunState
from tests.e2e.conftest import Cluster, free_port
from tests.helpers import wait_for
from tests.isolation import PYTHON_VERSION, open_folder, run_python, run_user

pytestmark = pytest.mark.slow

SECRET_A = "a-secret-" + secrets.token_hex(8)
PEM = (
    "-----BEGIN PRIVATE KEY-----\n" + "\n".join(secrets.token_hex(32) for _ in range(3)) + "\n-----END PRIVATE KEY-----"
)
PEM_LINES = PEM.splitlines()[1:-1]


def _pids_of_job(job: str) -> list[int]:
    """Pids whose environment says KIRBY_JOB=<job> (read as root)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if f"KIRBY_JOB={job}".encode() in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.fixture
def isolated(example_index):  # noqa: F811 (fixture)
    user = run_user()
    python = run_python()
    folder = open_folder()
    token, secret_key = secrets.token_urlsafe(16), "web-" + secrets.token_urlsafe(16)
    (folder / ".env").write_text(f"SECRET_KEY={secret_key}\n")
    os.chmod(folder / ".env", 0o644)  # as an operator might leave it: the supervisor must tighten it
    web_port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'kirby.db'}",
        "KIRBY_EMBEDDED_PATH": str(folder / "embedded.db"),
        "KIRBY_PACKAGE_INDEX": example_index,
        "KIRBY_VENV_DIRECTORY": str(folder / "venvs"),
        "KIRBY_RUN_DIRECTORY": str(folder / "runs"),
        "KIRBY_API_TOKEN": token,
        "KIRBY_SCHEDULE_ENDPOINT": f"http://127.0.0.1:{web_port}/schedule",
        "KIRBY_RUN_USER": user.pw_name,
        "KIRBY_RUN_PYTHON": python,
        "EXT_RETRIES": "2",
        "EXT_WAIT_BETWEEN_RETRIES": "0.2",
    }
    database = open_database(load_settings(environ=env, cwd=folder))
    cluster = Cluster(folder, env, web_port, database)
    try:
        yield cluster, user, token, secret_key
    finally:
        cluster.close()
        shutil.rmtree(folder, ignore_errors=True)


def _add_daemon(cluster: Cluster, name: str, package: str, config: dict[str, str], secret=()) -> None:
    cluster.add_job(name, package, daemon=True)
    with cluster.database.session() as session:
        job = session.query(Job).filter_by(name=name).one()
        for key, value in config.items():
            session.add(ConfigKey(scope=ConfigScope.JOB, job=job, key=key, value=value, secret=key in secret))


def _lines(cluster: Cluster, run_id: str) -> list[str]:
    with cluster.database.session() as session:
        return [line.text for line in stored_lines(session, run_id)]


def _finished(cluster: Cluster, job: str):
    return next((run for run in cluster.runs(job) if run.state == RunState.SUCCEEDED), None)


def test_a_script_cannot_read_other_jobs_or_kirby_and_every_job_s_secrets_are_masked(isolated):
    cluster, user, token, secret_key = isolated
    folder = cluster.workdir
    supervisor = "iso-" + secrets.token_hex(4)
    a_venv = folder / "venvs" / f"kirby-example-daemon-1.0.0-py{PYTHON_VERSION}"
    a_module = a_venv / "lib" / f"python{PYTHON_VERSION}" / "site-packages" / "kirby_example_daemon" / "__main__.py"
    _add_daemon(
        cluster, "job-a", "kirby-example-daemon", {"SECRET_A": SECRET_A, "KEY_A": PEM}, secret={"SECRET_A", "KEY_A"}
    )
    probe = {
        "PROBE_WAIT_FOR": "kirby_example_daemon",
        "PROBE_WAIT_COUNT": "2",  # A's reaper and A's script
        "PROBE_CMDLINE": f"kirby_example_daemon,supervisor {supervisor},web --port {cluster.web_port}",
        "PROBE_READ": ",".join(str(folder / name) for name in (".env", "kirby.db", "embedded.db")),
        "PROBE_LIST": f"{folder / 'runs'},{folder / 'venvs'}",
        "PROBE_WRITE": f"{a_module},{a_venv / 'bin' / 'planted'}",
    }
    _add_daemon(cluster, "job-b", "kirby-example-prober", probe)
    _add_daemon(cluster, "job-c", "kirby-example-prober", {"PROBE_ECHO": f"{SECRET_A}\n{PEM}"})
    cluster.start_web()
    cluster.start_supervisor(supervisor)
    logs = f"see {folder}/web.log and {folder}/{supervisor}.log"
    b_run = wait_for(lambda: _finished(cluster, "job-b"), 240, f"job B's probe never finished; {logs}")
    c_run = wait_for(lambda: _finished(cluster, "job-c"), 60, f"job C never finished; {logs}")
    a_pids = wait_for(lambda: _pids_of_job("job-a"), 30, "job A is not running")
    original = a_module.read_bytes()
    b_lines = _lines(cluster, b_run.id)
    c_lines = _lines(cluster, c_run.id)
    supervisor_log = (folder / f"{supervisor}.log").read_text()

    assert f"identity uid {user.pw_uid} euid {user.pw_uid}" in b_lines[0], b_lines[:3]
    assert "probe done" in b_lines, b_lines
    for pid in [*a_pids, cluster.processes[supervisor].pid, cluster.processes["web"].pid]:
        for kind in ("environ", "mem"):
            assert f"{kind} {pid} denied Permission denied" in b_lines, (kind, pid, b_lines)
    for name in (".env", "kirby.db", "embedded.db"):
        assert f"read {folder / name} denied Permission denied" in b_lines, (name, b_lines)
    for name in ("runs", "venvs"):
        assert f"list {folder / name} denied Permission denied" in b_lines, (name, b_lines)
    for path in (a_module, a_venv / "bin" / "planted"):
        assert f"write {path} denied Permission denied" in b_lines, (path, b_lines)
    assert not [line for line in b_lines if " READ " in line or "WROTE" in line], b_lines
    assert a_module.read_bytes() == original and not (a_venv / "bin" / "planted").exists()
    text = "\n".join(b_lines)
    for leaked in (SECRET_A, *PEM_LINES, token, secret_key):
        assert leaked not in text

    # B's working directory and TMPDIR: private to the run user.
    assert [line for line in b_lines if line.startswith("tmpdir ")][0].endswith(f"mode 0o700 owner {user.pw_uid}")
    assert [line for line in b_lines if line.startswith("cwd ")][0].endswith(f"mode 0o700 owner {user.pw_uid}")
    # Kirby's state: private to Kirby's user.
    for name in (".env", "kirby.db", "embedded.db"):
        assert oct((folder / name).stat().st_mode & 0o777) == "0o600", name

    # Another job's secrets, printed by C (PEM key line by line), are masked in C's log.
    assert c_lines.count("echo ***") == 1 + len(PEM.splitlines()), c_lines
    assert not any(value in line for line in c_lines for value in (SECRET_A, *PEM_LINES))

    assert f"run isolation: scripts run as {user.pw_name} (uid {user.pw_uid})" in supervisor_log
    assert "Kirby processes non-dumpable" in supervisor_log
