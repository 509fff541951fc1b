"""Run now with a real supervisor: the log lines of the run arrive live in the logs tab.

A real `kirby web` and a real `kirby supervisor` (embedded bus and leases), the script installed
from the real pypiserver (``kirby-example-sleep``: one heartbeat line a second).
"""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import KIRBY, log_in, screenshot, start_kirby_web, stop

from kirby.db import open_database
from kirby.models import ConfigKey, ConfigScope, Context, Environment, Job, JobType, Run, RunState
from tests.integration.conftest import example_index, example_wheels  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.pypi]


@pytest.fixture
def cluster(tmp_path, example_index):  # noqa: F811
    web = start_kirby_web(tmp_path, KIRBY_PACKAGE_INDEX=example_index)
    database = open_database(web.settings)
    with database.session() as s:
        job = Job(name="sleepy", type=JobType.SCHEDULED, description="prints a heartbeat a second")
        s.add_all(
            [
                job,
                Context(
                    job=job,
                    environment=Environment(name="e2e"),
                    package_name="kirby-example-sleep",
                    package_version="1.0.0",
                ),
                ConfigKey(scope=ConfigScope.JOB, job=job, key="SLEEP_SECONDS", value="4"),
            ]
        )
    with open(tmp_path / "supervisor.log", "wb") as log:
        supervisor = subprocess.Popen(
            [str(KIRBY), "supervisor", "alpha", "--window", "1", "--wakeup", "2", "--grace", "2"],
            env=web.env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield web, database
    stop(supervisor)
    stop(web.process)
    database.dispose()


def test_run_now_and_watch_the_log_arrive_live(page, cluster):
    web, database = cluster
    log_in(page, web, "alice")
    leading = page.locator("#supervisors tr", has_text="alpha").locator("td", has_text="yes (epoch")
    for _ in range(60):  # alpha registers and wins the election within seconds (the page is not live: reload)
        page.goto(f"{web.url}/admin/supervisors/")
        if leading.count():
            break
        page.wait_for_timeout(1000)
    assert leading.count(), "supervisor alpha never showed up as the leader on the supervisors page"
    screenshot(page, "supervisors")

    page.goto(f"{web.url}/admin/context/")
    page.click("button.run-now")
    page.wait_for_url(re.compile(r".*/admin/logs/\?run=sleepy"))
    run_id = page.locator("#run").input_value()
    lines = page.locator("#log-lines .log-text")
    # the venv is built on first use: allow for the install, then lines come one a second
    lines.nth(1).wait_for(timeout=180_000)
    seen_while_running = lines.count()
    with database.session() as s:
        assert s.get(Run, run_id).state == RunState.RUNNING  # the page shows lines of a run still running
    page.locator("#log-status[data-state=succeeded]").wait_for(timeout=60_000)
    texts = [t.split(" ", 1)[1] for t in lines.all_inner_texts()]
    assert texts[0] == "sleeping 4 s" and texts[-1] == "done" and "heartbeat 2" in texts
    assert seen_while_running < len(texts)  # more lines arrived after the first ones were shown
    screenshot(page, "logs-live")
    with database.session() as s:
        run = s.get(Run, run_id)
        assert (run.state, run.supervisor, run.exit_code, run.trigger) == (RunState.SUCCEEDED, "alpha", 0, "manual")
