"""The venv cache against the real pypiserver (and a local folder index): pinned, built once, healed."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import threading
from pathlib import Path

import pytest

from kirby.errors import PackageError
from kirby.tasks.install import Installer, default_installer, find_uv
from kirby.tasks.venvs import MARKER, VenvCache

pytestmark = pytest.mark.pypi


def _builds(cache: VenvCache) -> list[str]:
    log = cache.locks / "builds.log"
    return log.read_text().splitlines() if log.exists() else []


def _installed_version(venv: Path) -> str:
    code = "from importlib.metadata import version; print(version('kirby-example-hello'))"
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_two_pinned_versions_live_side_by_side(tmp_path, example_index):
    cache = VenvCache(tmp_path, default_installer(example_index))
    old = cache.ensure("kirby-example-hello", "1.0.0")
    new = cache.ensure("kirby-example-hello", "1.1.0")
    assert old != new
    assert _installed_version(old) == "1.0.0"
    assert _installed_version(new) == "1.1.0"
    marker = json.loads((new / MARKER).read_text())
    assert marker["installer"] == "uv" and marker["version"] == "1.1.0"


def test_a_ready_venv_is_reused_without_building(tmp_path, example_index):
    cache = VenvCache(tmp_path, default_installer(example_index))
    first = cache.ensure("kirby-example-hello", "1.0.0")
    assert cache.ensure("Kirby_Example.Hello", "1.0.0") == first  # same name, normalized
    assert len(_builds(cache)) == 1


def test_concurrent_first_runs_in_threads_build_once(tmp_path, example_index):
    cache = VenvCache(tmp_path, default_installer(example_index))
    results, errors = [], []

    def build():
        try:
            results.append(cache.ensure("kirby-example-hello", "1.0.0"))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(set(results)) == 1 and len(results) == 6
    assert len(_builds(cache)) == 1, _builds(cache)


def _ensure_in_process(directory: str, index: str, start: multiprocessing.Event) -> None:
    start.wait(30)
    VenvCache(Path(directory), default_installer(index)).ensure("kirby-example-sleep", "1.0.0")


def test_concurrent_first_runs_in_processes_build_once(tmp_path, example_index):
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_ensure_in_process, args=(str(tmp_path), example_index, start)) for _ in range(3)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    cache = VenvCache(tmp_path, default_installer(example_index))
    assert len(_builds(cache)) == 1, _builds(cache)


def test_a_crashed_build_is_cleaned_up_and_rebuilt(tmp_path, example_index):
    cache = VenvCache(tmp_path, default_installer(example_index))
    venv = cache.path("kirby-example-hello", "1.0.0")
    crashed = tmp_path / f".tmp-{venv.name}-dead0000"  # a build killed midway
    (crashed / "bin").mkdir(parents=True)
    venv.mkdir()  # and a half-moved venv without its marker
    (venv / "pyvenv.cfg").write_text("home = /nowhere\n")
    assert cache.ensure("kirby-example-hello", "1.0.0") == venv
    assert not crashed.exists()
    assert (venv / MARKER).exists() and _installed_version(venv) == "1.0.0"


def test_a_build_killed_midway_never_looks_ready(tmp_path, example_index):
    cache = VenvCache(tmp_path, default_installer(example_index))
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from kirby.tasks.install import default_installer\n"
        "from kirby.tasks.venvs import VenvCache\n"
        "installer = default_installer(sys.argv[2])\n"
        "class Dying(type(installer)):\n"
        "    def build(self, venv, package, version):\n"
        "        super().build(venv, package, version)\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "VenvCache(Path(sys.argv[1]), Dying(installer.index, installer.uv)).ensure('kirby-example-hello', '1.0.0')\n"
    )
    done = subprocess.run([os.sys.executable, "-c", script, str(tmp_path), example_index], capture_output=True)
    assert done.returncode == -9, done.stderr
    assert not cache.path("kirby-example-hello", "1.0.0").exists()
    assert list(tmp_path.glob(".tmp-*")), "the killed build should have left its temporary folder"
    venv = cache.ensure("kirby-example-hello", "1.0.0")
    assert _installed_version(venv) == "1.0.0" and not list(tmp_path.glob(".tmp-*"))


def test_a_broken_venv_is_detected_and_rebuilt(tmp_path, example_index):
    cache = VenvCache(tmp_path, default_installer(example_index))
    venv = cache.ensure("kirby-example-hello", "1.0.0")
    for dist_info in venv.glob("lib/python*/site-packages/kirby_example_hello-*.dist-info"):
        subprocess.run(["rm", "-rf", str(dist_info)], check=True)
    assert cache.ensure("kirby-example-hello", "1.0.0") == venv
    assert _installed_version(venv) == "1.0.0"
    assert len(_builds(cache)) == 2


@pytest.mark.parametrize(
    "name, version",
    [
        ("kirby example", "1.0.0"),
        ("-bad", "1.0.0"),
        ("x; rm -rf /", "1.0.0"),
        ("kirby-example-hello", ">=1.0"),
        ("kirby-example-hello", ""),
        ("kirby-example-hello", "1.0 --index-url x"),
    ],
)
def test_invalid_names_and_versions_are_refused_before_any_command(tmp_path, name, version):
    class NoCommands(Installer):
        def _run(self, command, requirement):
            raise AssertionError(f"a command ran: {command}")

    cache = VenvCache(tmp_path, NoCommands(index=str(tmp_path), uv=find_uv()))
    with pytest.raises(PackageError) as error:
        cache.ensure(name, version)
    assert repr(name if "name" in str(error.value) else version) in str(error.value)
    assert not list(tmp_path.iterdir())


def test_an_unknown_package_fails_with_the_installers_output(tmp_path, example_index):
    cache = VenvCache(tmp_path, default_installer(example_index))
    with pytest.raises(PackageError) as error:
        cache.ensure("kirby-example-nope", "1.0.0")
    assert str(error.value) == (
        f"package 'kirby-example-nope'==1.0.0 is not on the package index {example_index}: "
        "check the name and version, or upload it"
    )
    assert "kirby-example-nope" in error.value.output
    assert not [p for p in tmp_path.iterdir() if p.name != ".locks"]


def test_an_unknown_version_fails_clearly(tmp_path, example_index):
    with pytest.raises(PackageError, match=r"'kirby-example-hello'==9\.9\.9 is not on the package index"):
        VenvCache(tmp_path, default_installer(example_index)).ensure("kirby-example-hello", "9.9.9")


@pytest.mark.slow
def test_the_pip_fallback_installs_from_the_real_index(tmp_path, example_index):
    cache = VenvCache(tmp_path, Installer(index=example_index, uv=None))
    venv = cache.ensure("kirby-example-hello", "1.1.0")
    assert _installed_version(venv) == "1.1.0"
    assert json.loads((venv / MARKER).read_text())["installer"] == "pip"
    with pytest.raises(PackageError, match="is not on the package index") as error:
        cache.ensure("kirby-example-nope", "1.0.0")
    assert "kirby-example-nope" in error.value.output


def test_a_local_folder_of_wheels_is_an_index(tmp_path, example_wheels):
    cache = VenvCache(tmp_path / "venvs", default_installer(str(example_wheels)))
    assert _installed_version(cache.ensure("kirby-example-hello", "1.1.0")) == "1.1.0"
    with pytest.raises(PackageError, match=f"is not on the package index {example_wheels}"):
        cache.ensure("kirby-example-nope", "1.0.0")


def test_gc_removes_unused_versions_but_never_one_in_use(tmp_path, example_index):
    cache = VenvCache(tmp_path, default_installer(example_index))
    old = cache.ensure("kirby-example-hello", "1.0.0")
    lease = cache.acquire("kirby-example-fail", "1.0.0")  # a run is using it
    kept = cache.ensure("kirby-example-sleep", "1.0.0")
    assert {info.name for info in cache.gc({("kirby-example-sleep", "1.0.0")}, dry_run=True)} == {old.name}
    assert old.exists()
    removed = cache.gc({("kirby-example-sleep", "1.0.0")})
    assert [info.name for info in removed] == [old.name]
    assert not old.exists() and kept.exists() and lease.path.exists()
    assert [info.in_use for info in cache.list() if info.name == lease.path.name] == [True]
    lease.release()
    assert [info.name for info in cache.gc(set())] == sorted([lease.path.name, kept.name])
    assert cache.list() == []
