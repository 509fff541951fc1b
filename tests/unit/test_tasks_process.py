"""Pure parts of a run: line splitting with a bound, masking, environment, working directory."""

from datetime import datetime, timezone
from pathlib import Path

from kirby.tasks import process
from kirby.tasks.base import RunSpec
from kirby.tasks.install import index_arguments, installer_environment
from kirby.tasks.masking import Masker
from kirby.tasks.output import CUT_MARKER, MAX_LINE
from kirby.tasks.output import LineSplitter as _LineSplitter
from kirby.tasks.process import run_directory_for, run_environment


def test_lines_are_split_across_chunks():
    splitter = _LineSplitter()
    assert splitter.feed(b"one\ntw") == [b"one"]
    assert splitter.feed(b"o\n\nthr") == [b"two", b""]
    assert splitter.flush() == [b"thr"] and splitter.flush() == []


def test_a_long_line_is_cut_with_a_marker_and_memory_stays_bounded():
    splitter = _LineSplitter()
    for _ in range(100):
        assert splitter.feed(b"x" * 10_000) == []
        assert len(splitter.pending) <= MAX_LINE
    [line] = splitter.feed(b"tail\nnext")
    assert line == b"x" * MAX_LINE + CUT_MARKER.format(1_000_004 - MAX_LINE).encode()
    assert splitter.flush() == [b"next"]


def test_secrets_are_masked_anywhere_but_short_values_are_not():
    mask = Masker(["hunter22", "hunter2", "ab", ""])
    assert mask("pw=hunter22;again hunter2x") == "pw=***;again ***x"
    assert mask("ab stays") == "ab stays"
    assert Masker([])("nothing to hide") == "nothing to hide"
    assert Masker(["a.b*c"])("a.b*c and axbbc") == "*** and axbbc"  # values are literal, not patterns


def _spec(**fields):
    return RunSpec(
        run_id="job:prod:2026",
        job="job",
        environment="prod",
        package="p",
        version="1",
        scheduled_at=datetime(2026, 1, 2, 4, 5, tzinfo=timezone.utc),
        supervisor="s1",
        **fields,
    )


def test_the_run_environment_is_built_from_scratch(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak")
    env, skipped = run_environment(
        _spec(config={"A": "1", "PATH": "/evil", "BAD=KEY": "x", "KIRBY_JOB": "fake"}), Path("/v")
    )
    assert skipped == ["BAD=KEY"]
    assert env["PATH"] == "/v/bin:/usr/local/bin:/usr/bin:/bin" and env["KIRBY_JOB"] == "job"
    assert env["A"] == "1" and env["KIRBY_SCHEDULED_AT"] == "2026-01-02T04:05:00+00:00"
    assert "AWS_SECRET_ACCESS_KEY" not in env and set(env) >= {"HOME", "LANG", "KIRBY_RUN_ID", "KIRBY_SUPERVISOR"}


def test_run_directories_are_one_safe_path_component(tmp_path):
    assert run_directory_for(tmp_path, "job-1.2") == tmp_path / "job-1.2"
    unsafe = run_directory_for(tmp_path, "../../etc/x y")
    assert unsafe.parent == tmp_path and "/" not in unsafe.name and not unsafe.name.startswith(".")
    assert run_directory_for(tmp_path, "a/b") != run_directory_for(tmp_path, "a_b")


def test_installers_ignore_the_supervisors_pip_and_uv_configuration(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://evil.invalid/")
    monkeypatch.setenv("UV_INDEX_URL", "http://evil.invalid/")
    env = installer_environment()
    assert env["PIP_CONFIG_FILE"] == "/dev/null" and env["UV_NO_CONFIG"] == "1" and env["PIP_NO_INPUT"] == "1"
    assert not [name for name in env if name in ("PIP_INDEX_URL", "UV_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT")]
    assert index_arguments("http://127.0.0.1:8081/simple/") == ["--index-url", "http://127.0.0.1:8081/simple/"]
    assert index_arguments("/srv/wheels") == ["--no-index", "--find-links", "/srv/wheels"]


def test_the_reaper_source_is_shipped_with_the_package():
    assert "PR_SET_CHILD_SUBREAPER" in process.REAPER_SOURCE
