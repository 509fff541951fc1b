"""Retention of run history (kirby.retention) and `kirby gc`: old finished runs and their log
lines go; recent runs and runs still active stay, however old."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from kirby.cli import cli
from kirby.config import load_settings
from kirby.db import open_database
from kirby.events import RunEvent
from kirby.models import LogLine, Run
from kirby.recorder import record
from kirby.retention import RetentionLoop, prune_runs

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def add_run(database, run_id: str, scheduled: datetime, finished: datetime | None, lines: int = 3) -> None:
    events = [RunEvent("claimed", run_id, scheduled, "sup-a", {"job": "backup", "environment": "prod"})]
    events += [
        RunEvent("log", run_id, scheduled, "sup-a", {"seq": i, "stream": "stdout", "text": f"line {i}"})
        for i in range(lines)
    ]
    if finished is not None:
        events.append(RunEvent("finished", run_id, finished, "sup-a", {"state": "succeeded", "exit_code": 0}))
    with database.session() as s:
        record(s, events)


def runs_and_lines(database) -> tuple[list[str], int]:
    with database.session() as s:
        return sorted(s.scalars(select(Run.id))), s.scalar(select(func.count()).select_from(LogLine))


def seed(database) -> None:
    old = NOW - timedelta(days=100)
    add_run(database, "backup:prod:old", old, old + timedelta(minutes=5))
    add_run(database, "backup:prod:old-running", old, None)  # still running: never deleted
    add_run(database, "backup:prod:old-finished-late", old, NOW - timedelta(days=1))  # a long run, just ended
    add_run(database, "backup:prod:recent", NOW - timedelta(days=2), NOW - timedelta(days=2))


def test_old_finished_runs_and_their_lines_are_deleted(db):
    seed(db)
    pruned = prune_runs(db, NOW, days=90, batch=1)  # batch=1: several transactions
    assert (pruned.runs, pruned.lines) == (1, 3)
    ids, lines = runs_and_lines(db)
    assert ids == ["backup:prod:old-finished-late", "backup:prod:old-running", "backup:prod:recent"]
    assert lines == 9
    assert prune_runs(db, NOW, days=90).runs == 0  # idempotent
    assert prune_runs(db, NOW, days=0).runs == 0  # 0 keeps everything
    assert prune_runs(db, NOW + timedelta(days=10), days=1).runs == 2  # only the running one stays


def test_kirby_web_prunes_once_a_day(db):
    seed(db)
    loop = RetentionLoop(db, days=90)
    assert loop.tick(NOW).runs == 1
    add_run(db, "backup:prod:old-2", NOW - timedelta(days=200), NOW - timedelta(days=200))
    assert loop.tick(NOW + timedelta(hours=23)) is None  # not yet a day later
    assert loop.tick(NOW + timedelta(days=1)).runs == 1
    assert RetentionLoop(db, days=0).tick(NOW) is None


@pytest.fixture
def gc_env(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'kirby.db'}", "KIRBY_RUN_RETENTION_DAYS": "30"}


def test_kirby_gc(gc_env, tmp_path):
    database = open_database(load_settings(environ=gc_env, cwd=tmp_path))
    try:
        now = datetime.now(timezone.utc)
        add_run(database, "backup:prod:a", now - timedelta(days=40), now - timedelta(days=40))
        add_run(database, "backup:prod:b", now - timedelta(days=10), now - timedelta(days=10))
        result = CliRunner().invoke(cli, ["gc"], env=gc_env)
        assert (result.exit_code, result.output) == (
            0,
            "deleted 1 runs and 3 log lines finished more than 30 days ago\n",
        ), result.output
        result = CliRunner().invoke(cli, ["gc", "--days", "5"], env=gc_env)
        assert result.output == "deleted 1 runs and 3 log lines finished more than 5 days ago\n"
        assert runs_and_lines(database) == ([], 0)
    finally:
        database.dispose()


def test_kirby_gc_with_retention_off_is_a_clear_error(gc_env):
    result = CliRunner().invoke(cli, ["gc"], env={**gc_env, "KIRBY_RUN_RETENTION_DAYS": "0"})
    assert result.exit_code == 1
    assert result.output == (
        "Error: KIRBY_RUN_RETENTION_DAYS=0 keeps run history forever; pass --days N to prune anyway\n"
    )
