"""Masking of every job's secrets and resource limits, through LocalExecutor and real processes.

The scripts are kirby-example-prober runs from the real pypiserver. (Run-user isolation itself is
tested end to end in tests/e2e/test_isolation.py.)
"""

from __future__ import annotations

import shutil
import signal

import pytest

from kirby.errors import ConfigError, PackageError
from kirby.tasks.executor import LocalExecutor
from kirby.tasks.process import CUT_MARKER, MAX_LINE

PROBER = "kirby-example-prober"


@pytest.fixture
def make_executor(make_settings, example_index, shared_venvs):
    made = []

    def build(known_secrets=None, **variables):
        settings = make_settings(KIRBY_PACKAGE_INDEX=example_index, KIRBY_VENV_DIRECTORY=str(shared_venvs), **variables)
        executor = LocalExecutor(settings, "test-supervisor", timeout_grace=1.0, known_secrets=known_secrets)
        executor.prepare(PROBER, "1.0.0")
        made.append(executor)
        return executor

    yield build
    for executor in made:
        executor.shutdown(grace=1.0)


def _run(executor, spec, collector, seconds=60.0):
    executor.start(spec, collector.on_line, collector.on_exit)
    return collector.wait(seconds)


def test_the_secrets_of_every_known_job_are_masked_in_each_run(make_executor, collector, spec_for):
    pem = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nbKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----"
    )
    executor = make_executor(known_secrets=lambda: {"other-job-token-1234", pem})
    spec = spec_for(
        PROBER,
        config={"OWN": "own-secret-5678", "PROBE_ECHO": f"other-job-token-1234\nown-secret-5678 and {pem}"},
        secrets=("OWN",),
    )
    assert _run(executor, spec, collector).state == "succeeded", collector.texts()
    echoed = [text for text in collector.texts("stdout") if text.startswith("echo ")]
    assert echoed == ["echo ***", "echo *** and ***", "echo ***", "echo ***", "echo ***"]


def test_the_known_secrets_are_read_once_per_schedule_version(make_executor):
    """A run's masker costs no pass over every job's secrets while the schedule is unchanged (the
    supervisor hands the same frozenset per snapshot); a new version's secrets are masked."""
    reads = []

    class Secrets(frozenset):
        def __iter__(self):
            reads.append(1)
            return super().__iter__()

    version = Secrets({"first-version-secret"})
    executor = make_executor(known_secrets=lambda: version)
    first = executor.masker()
    reads.clear()
    assert executor.masker() is first and reads == []
    assert first("a first-version-secret b") == "a *** b"
    version = Secrets({"second-version-secret"})
    assert executor.masker()("a second-version-secret b") == "a *** b"


def test_a_secret_straddling_the_64_kib_cut_is_masked(make_executor, collector, spec_for):
    secret = "straddling-secret-" + "9" * 20
    prefix = "x" * (MAX_LINE - len("echo ") - 10)  # the cut falls 10 characters into the secret
    executor = make_executor()
    spec = spec_for(PROBER, config={"KEY": secret, "PROBE_ECHO": prefix + secret + "tail"}, secrets=("KEY",))
    assert _run(executor, spec, collector).state == "succeeded", collector.texts()
    cut = [text for text in collector.texts("stdout") if text.startswith("echo ")][0]
    assert cut == "echo " + prefix + "***" + CUT_MARKER.format(len(secret) - 10 + len("tail"))
    assert secret[:4] not in cut


def test_memory_and_open_files_limits(make_executor, collector, spec_for):
    executor = make_executor(KIRBY_RUN_MEMORY_LIMIT="256M", KIRBY_RUN_OPEN_FILES_LIMIT="32")
    spec = spec_for(
        PROBER,
        config={"PROBE_ALLOCATE": str(1024**3), "PROBE_OPEN_FILES": "100", "PROBE_CMDLINE": "kirby-no-such-process"},
    )
    assert _run(executor, spec, collector).state == "succeeded", collector.texts()
    out = collector.texts("stdout")
    assert f"limits as ({256 * 1024**2}, {256 * 1024**2})" in out[3] and "nofile (32, 32)" in out[3], out
    assert f"allocate {1024**3} MemoryError" in out
    assert any(line.startswith("open files ") and line.endswith(" then Too many open files") for line in out), out
    opened = int(next(line for line in out if line.startswith("open files ")).split()[2])
    assert opened < 32


def test_a_cpu_limit_stops_the_script_with_sigxcpu(make_executor, collector, spec_for):
    executor = make_executor(KIRBY_RUN_CPU_LIMIT="1")
    spec = spec_for(PROBER, config={"PROBE_BURN_CPU": "60", "PROBE_CMDLINE": "kirby-no-such-process"})
    result = _run(executor, spec, collector, seconds=120)
    assert (result.state, result.signal) == ("failed", signal.SIGXCPU), collector.texts()
    assert "burned cpu" not in collector.texts("stdout")


def test_a_root_supervisor_without_run_user_refuses_to_run_scripts(make_settings, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    with pytest.raises(ConfigError) as error:
        LocalExecutor(make_settings(KIRBY_ALLOW_ROOT_RUNS="false"), "root-supervisor")
    assert "KIRBY_RUN_USER is unset" in str(error.value) and "KIRBY_ALLOW_ROOT_RUNS=true" in str(error.value)


def test_an_unknown_run_user_is_refused(make_settings):
    with pytest.raises(ConfigError, match="KIRBY_RUN_USER='no-such-kirby-user': no such user; create it"):
        LocalExecutor(make_settings(KIRBY_RUN_USER="no-such-kirby-user"), "s")


@pytest.fixture
def open_root():
    from tests.isolation import open_folder

    folder = open_folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_job_s_run_as_user_runs_its_scripts(make_settings, example_index, collector, spec_for, open_root):
    """Per-job ``run_as`` (admin-only): that job's runs switch to its user; root or an unknown user
    is refused before anything starts."""
    from tests.isolation import run_python, run_user

    user = run_user()
    settings = make_settings(
        KIRBY_PACKAGE_INDEX=example_index,
        KIRBY_VENV_DIRECTORY=str(open_root / "venvs"),
        KIRBY_RUN_DIRECTORY=str(open_root / "runs"),
        KIRBY_RUN_PYTHON=run_python(),
    )
    executor = LocalExecutor(settings, "test-supervisor", timeout_grace=1.0)
    try:
        executor.prepare(PROBER, "1.0.0")
        spec = spec_for(PROBER, run_as=user.pw_name, config={"PROBE_CMDLINE": "kirby-no-such-process"})
        assert _run(executor, spec, collector).state == "succeeded", collector.texts()
        assert collector.texts("stdout")[0].startswith(f"identity uid {user.pw_uid} euid {user.pw_uid} ")
        for name, message in (("root", "is root: name an unprivileged user"), ("no-such-kirby-user", "no such user")):
            with pytest.raises(PackageError, match=f"run_as of job 'test-job'={name!r}.*{message}"):
                executor.start(spec_for(PROBER, run_as=name), collector.on_line, collector.on_exit)
        assert executor.running() == []
    finally:
        executor.shutdown(grace=1.0)
