"""Kirby installs from a built wheel into a clean venv and runs with no source tree around.

Builds the wheel with ``python -m build`` (setuptools, as ``pip install .`` would), installs it
with uv into a new venv outside the clone, then runs ``kirby --help``, ``kirby demo`` (the
packaged demo.json) and ``kirby web`` from an empty folder until ``/healthz`` answers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], cwd: Path, env: dict, timeout: float = 600) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_the_wheel_installs_and_runs_without_the_source_tree(tmp_path: Path):
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIRBY_", "KAFKA_", "REDIS_", "SQLALCHEMY_"))}
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], ROOT, env)
    (wheel,) = dist.glob("kirby-*.whl")
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    uv = Path(sys.executable).with_name("uv")
    _run([str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(wheel)], tmp_path, env)
    kirby = str(venv / "bin" / "kirby")
    env.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{work / 'kirby.db'}", SECRET_KEY="wheel-test-" + "x" * 32)

    assert "supervisor" in _run([kirby, "--help"], work, env)
    imported = _run([kirby, "demo"], work, env)
    assert "demo data inserted in the database" in imported, imported
    located = _run([str(venv / "bin" / "python"), "-c", "import kirby; print(kirby.__file__)"], work, env)
    assert str(venv) in located and str(ROOT) not in located, located

    port = _free_port()
    web = subprocess.Popen(
        [kirby, "web", "--host", "127.0.0.1", "--port", str(port)],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:

        def healthy() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                assert web.poll() is None, f"kirby web exited {web.returncode}: {web.stdout.read().decode()}"
                return False

        wait_for(healthy, 60, "kirby web installed from the wheel did not answer /healthz")
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=30)
