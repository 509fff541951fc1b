"""Fixtures of the execution tests: example wheels, served by the real pypiserver or from a folder.

The example wheels are built once per session (``examples/build.py``) into a session folder, and
copied into pypiserver's wheelhouse when a test asks for ``example_index``. Venvs are cached in one
session folder (``shared_venvs``) for tests that do not need a cold cache. ``kirby_cli`` runs the
installed console script as a user does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kirby.tasks.executor import LocalExecutor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "build.py"
KIRBY = Path(sys.executable).parent / "kirby"
CLI_TIMEOUT = 180  # seconds per command: a cold start of the CLI on a loaded 2-core machine is slow


def _load_builder():
    spec = importlib.util.spec_from_file_location("kirby_examples_build", EXAMPLES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_wheels(tmp_path_factory) -> Path:
    """A folder holding every example wheel: a local (folder) package index."""
    folder = tmp_path_factory.mktemp("example-wheels")
    _load_builder().build_examples(folder)
    return folder


@pytest.fixture
def example_index(package_index: str, wheelhouse: Path, example_wheels: Path) -> str:
    """The real pypiserver's URL, its wheelhouse holding every example wheel."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    for wheel in example_wheels.glob("*.whl"):
        served = wheelhouse / wheel.name
        if not served.exists() or served.read_bytes() != wheel.read_bytes():  # new or changed example
            part = wheelhouse / f".{wheel.name}.{os.getpid()}.part"  # pytest-xdist workers copy at once
            shutil.copy2(wheel, part)
            part.rename(wheelhouse / wheel.name)
    return package_index


@pytest.fixture(scope="session")
def shared_venvs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("shared-venvs")


@pytest.fixture
def executor(make_settings, example_index: str, shared_venvs: Path):
    """A LocalExecutor on the real pypiserver, with the session's venv cache and a 1 s grace."""
    executor = LocalExecutor(
        make_settings(KIRBY_PACKAGE_INDEX=example_index, KIRBY_VENV_DIRECTORY=str(shared_venvs)),
        "test-supervisor",
        timeout_grace=1.0,
    )
    yield executor
    executor.shutdown(grace=1.0)


class Collector:
    """Collects a run's lines and result; ``wait`` bounds the wait with a clear failure."""

    def __init__(self):
        self.lines = []
        self.results = []
        self.done = threading.Event()
        self.lines_after_exit = 0

    def on_line(self, line) -> None:
        if self.results:
            self.lines_after_exit += 1
        self.lines.append(line)

    def on_exit(self, result) -> None:
        self.results.append(result)
        self.done.set()

    def wait(self, seconds: float = 30.0):
        assert self.done.wait(seconds), f"the run did not end within {seconds} s; lines so far: {self.texts()[-5:]}"
        return self.results[0]

    def texts(self, stream: str | None = None) -> list[str]:
        return [line.text for line in self.lines if stream is None or line.stream == stream]


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def spec_for():
    """Build a RunSpec with a fresh run id: ``spec_for("kirby-example-hello", config={...})``."""
    import uuid
    from datetime import datetime, timezone

    from kirby.tasks.base import RunSpec

    def build(package: str, version: str = "1.0.0", **fields) -> RunSpec:
        fields.setdefault("run_id", f"test:{package}:{uuid.uuid4().hex[:8]}")
        return RunSpec(
            job=fields.pop("job", "test-job"),
            environment="test",
            package=package,
            version=version,
            scheduled_at=datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc),
            supervisor="test-supervisor",
            **fields,
        )

    return build


@pytest.fixture
def make_collector():
    """Build more collectors in one test: ``make_collector()``."""
    return Collector


@pytest.fixture
def kirby_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``kirby_cli("export")``: the installed console script run in ``tmp_path`` on a fresh SQLite
    script database and embedded store there, without the test environment's KIRBY_, KAFKA_, EXT_
    and SQLALCHEMY_ variables. It asserts the exit status (0; not 0 with ``ok=False``) and returns
    the completed process (stdout and stderr as text)."""
    assert KIRBY.is_file(), f"the console script {KIRBY} is missing: install the package (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIRBY_", "KAFKA_", "EXT_", "SQLALCHEMY_"))}
    env.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'kirby.db'}", KIRBY_EMBEDDED_PATH=str(tmp_path / "e.db"))

    def kirby(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(KIRBY), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
        )
        assert (done.returncode == 0) == ok, f"kirby {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    return kirby
