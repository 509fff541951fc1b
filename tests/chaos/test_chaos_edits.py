"""Edits followed by a leader SIGKILL (issue 10, scenario 5): a new leader re-publishes what was
published (the record of published slots), never a re-computation of the past with today's rule.
Real processes, as in ``test_chaos.py``; audited from the script's ledger and the runs table."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from kirby.cron import slots_between
from kirby.models import Context, Job, RunState, Schedule, Suspension
from kirby.run_ids import parse_run_id, slot_run_id
from tests.chaos.audit import audit, ledger
from tests.chaos.test_chaos import GRACE, audit_five, runs_continue, start
from tests.helpers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.kafka, pytest.mark.redis]
WAKEUP = 2.0  # the supervisors' --wakeup: the leader reads edits within this


def kill_the_leader(cluster) -> str:
    leader, _ = cluster.wait_leader()
    cluster.signal(leader, signal.SIGKILL)
    cluster.wait_leader(other_than=leader)
    return leader


def test_a_deleted_suspension_then_a_leader_sigkill_runs_no_slot_recorded_skipped(chaos):
    cluster, path = start(chaos())
    begin = datetime.now(timezone.utc).replace(microsecond=0)
    starts, ends = begin + timedelta(seconds=5), begin + timedelta(seconds=11)
    with cluster.database.session() as s:
        job = s.query(Job).filter_by(name="tick").one()
        s.add(Suspension(job=job, starts_at=starts, ends_at=ends, reason="chaos"))
    last = slot_run_id("tick", "e2e", ends - timedelta(seconds=1))
    wait_for(
        lambda: any(r.id == last and r.state == RunState.SKIPPED for r in cluster.runs("tick")),
        60,
        "the suspended slots were not recorded skipped",
    )
    with cluster.database.session() as s:
        s.query(Suspension).delete()
    time.sleep(WAKEUP + 1)  # the fault's timing: the leader has read the edit (no outside sign of it)
    kill_the_leader(cluster)
    end = runs_continue(path, after=8)
    figures = audit(cluster, "tick", path, begin, end, "suspension deleted, then leader SIGKILL", GRACE, lost_ok=True)
    audit_five(cluster, begin, end, "suspension of tick deleted, then leader SIGKILL", GRACE, lost_ok=True)
    assert figures.skipped >= 6, "the suspended slots must stay recorded skipped (and not run)"


def test_a_cron_edit_then_a_leader_sigkill_publishes_no_phantom_slot_and_forgets_none(chaos):
    """Every second, then every 2 s: the new leader re-publishes the old rule's unclaimed slots
    (odd seconds before the edit) and no odd second after it."""
    cluster, path = start(chaos())
    wait_for(lambda: len(ledger(path)) >= 3, 60, "three runs before the edit")
    begin = datetime.now(timezone.utc).replace(microsecond=0)
    with cluster.database.session() as s:
        schedule = s.query(Schedule).join(Schedule.context).join(Context.job).filter(Job.name == "tick").one()
        schedule.cron = "* * * * * */2"
    edited = datetime.now(timezone.utc)
    time.sleep(WAKEUP + 1)  # the fault's timing: the leader has read the edit
    kill_the_leader(cluster)
    end = runs_continue(path, after=8, step=2)  # the new rule runs even seconds only
    applied = edited + timedelta(seconds=WAKEUP + 1)  # by then the leader follows the new rule
    every_second = {slot_run_id("tick", "e2e", t) for t in slots_between("* * * * * *", "UTC", begin, end)}
    even = {slot_run_id("tick", "e2e", t) for t in slots_between("* * * * * */2", "UTC", begin, end)}
    old_rule = {slot_run_id("tick", "e2e", t) for t in slots_between("* * * * * *", "UTC", begin, edited)}
    wanted = sorted(old_rule | even)

    def left() -> list[str]:  # slots of either rule with no record, or left offered or claimed
        runs = {run.id: run for run in cluster.runs("tick")}
        return [r for r in wanted if r not in runs or runs[r].state in (RunState.OFFERED, RunState.CLAIMED)]

    wait_for(lambda: not left(), 120, "slots left unrecorded, offered or claimed")
    executions = ledger(path)
    runs = {run.id: run for run in cluster.runs("tick")}
    phantoms = sorted(
        run_id for run_id in every_second - even - old_rule if run_id in runs and parse_run_id(run_id).instant > applied
    )
    counts = Counter(run_id for run_id, _ in executions)
    twice = sorted(run_id for run_id, count in counts.items() if count > 1)
    ran = [r for r in wanted if r in counts]
    print(
        f"[chaos] cron edit, then leader SIGKILL: slots expected {len(wanted)} (old rule before the edit, new after), "
        f"ran {len(ran)}, skipped {sum(1 for r in wanted if r in runs and runs[r].state == RunState.SKIPPED)}, "
        f"lost {sum(1 for r in wanted if r in runs and runs[r].state == RunState.LOST)}, duplicates {len(twice)}, "
        f"phantoms {len(phantoms)}"
    )
    assert not twice, f"ran more than once: {twice}"
    audit_five(cluster, begin, end, "cron edit of tick, then leader SIGKILL", GRACE, lost_ok=True)
    assert not phantoms, f"odd seconds published after the edit took effect: {phantoms}"
