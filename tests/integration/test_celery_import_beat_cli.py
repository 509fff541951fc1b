"""`kirby celery import-beat` as users run it: the real console script, a real Celery app module
with crontab, timedelta and solar entries, a real SQLite script database."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

APP = textwrap.dedent(
    """
    from datetime import timedelta

    from celery import Celery
    from celery.schedules import crontab, solar

    app = Celery("proj", broker="memory://")
    app.conf.timezone = "Europe/Paris"
    app.conf.beat_schedule = {
        "nightly report": {
            "task": "proj.tasks.nightly",
            "schedule": crontab(minute=30, hour=2, day_of_week="mon-fri"),
            "kwargs": {"full": True},
            "options": {"queue": "reports"},
        },
        "tick": {"task": "proj.tasks.tick", "schedule": timedelta(seconds=30), "args": (1, 2)},
        "sunrise": {"task": "proj.tasks.lights", "schedule": solar("sunrise", 48.85, 2.35)},
    }
    """
)


@pytest.mark.slow
@pytest.mark.timeout(900)  # five cold starts of the CLI on a loaded 2-core machine
def test_import_beat_refuses_solar_then_imports_the_rest(kirby_cli, tmp_path: Path):
    (tmp_path / "proj.py").write_text(APP)  # the console script runs in tmp_path: proj is importable
    refused = kirby_cli("celery", "import-beat", "proj:app", ok=False)
    assert refused.stderr.splitlines() == [
        "'sunrise' refused: solar('sunrise') follows the sun at (48.85, 2.35): cron has no sunrise; keep it on "
        "beat, or replace it with a crontab at a fixed time",
        "Error: 1 of 3 beat entries cannot be imported (see above); nothing was written. Change them, or leave "
        "them to beat with --skip NAME",
    ]  # nothing written, nor by the dry run: tests/unit/test_demo_beat.py checks the database

    dry = kirby_cli("celery", "import-beat", "proj:app", "--skip", "sunrise", "--dry-run").stdout
    assert "'tick' -> job tick: proj.tasks.tick at '* * * * * */30' (UTC); beat had an interval of 30 s" in dry
    assert "'nightly report' -> job nightly-report: proj.tasks.nightly at '30 2 * * 1-5' (Europe/Paris)" in dry
    assert "created job tick" in dry and dry.rstrip().endswith("3 change(s); dry run: nothing written")

    done = kirby_cli("celery", "import-beat", "proj:app", "--skip", "sunrise", "--environment", "production").stdout
    assert "'sunrise' skipped: left to celery beat" in done and "3 change(s) applied; stop celery beat now" in done
    jobs = json.loads(kirby_cli("export").stdout)["JOBS"]
    assert sorted(jobs) == ["nightly-report", "tick"]
    assert jobs["nightly-report"]["celery_task"]["queue"] == "reports"
    assert jobs["nightly-report"]["scheduled_param"]["timezone"] == "Europe/Paris"
    assert jobs["tick"]["environments"] == ["production"] and jobs["tick"]["celery_task"]["args"] == [1, 2]

    bad = kirby_cli("celery", "import-beat", "proj:nope", ok=False)
    assert bad.stderr.strip() == "Error: proj:nope: proj has no attribute 'nope'; name the Celery app object"
