"""The leader after the lease store lost its data (issue 10, amnesia), on the embedded store and bus
(real product code), with ``now`` passed in: it publishes nothing while the generation is closed,
then rebuilds claims and cursors from the record of runs and re-publishes only what did not run."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from kirby.errors import KirbyError
from kirby.lease.base import RestoredClaim
from kirby.run_ids import slot_run_id
from kirby.schedule import StaticScheduleSource
from kirby.schedule.record import RecordedRun, RunRecord, StaticRunRecord
from kirby.supervisor.amnesia import GenerationWatch
from kirby.supervisor.rebuild import Recovery
from tests.unit.test_scheduler import EVERY_10S, T0, Cluster, entry, lead, snapshot

UTC = timezone.utc
SETTLE = 5.0


@pytest.fixture
def cluster(make_settings):
    c = Cluster(make_settings())
    yield c
    c.close()


def forget_everything(cluster) -> None:
    with sqlite3.connect(cluster.settings.embedded_path) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'lease_%'"):
            db.execute(f"DELETE FROM {table}")


def run_id(second: int) -> str:
    return slot_run_id("report", "prod", T0 + timedelta(seconds=second))


class FlakyRecord(StaticRunRecord):
    """The web's record, unreadable for the first ``failures`` reads (the web server down)."""

    def __init__(self, record: RunRecord, failures: int = 0):
        super().__init__(record)
        self.failures, self.reads = failures, 0

    def read(self, since: datetime) -> RunRecord:
        self.reads += 1
        if self.reads <= self.failures:
            raise KirbyError("cannot read the run record at http://127.0.0.1:1/cluster/runs: ConnectionError")
        return super().read(since)


def test_after_amnesia_the_leader_holds_rebuilds_from_the_record_and_republishes_only_what_did_not_run(cluster):
    record = FlakyRecord(
        RunRecord(
            runs=[
                RecordedRun(run_id(10), "report", "prod", T0 + timedelta(seconds=10), "succeeded", "s1"),
                RecordedRun(run_id(20), "report", "prod", T0 + timedelta(seconds=20), "claimed", "s9"),  # s9 is gone
                RecordedRun(run_id(30), "report", "prod", T0 + timedelta(seconds=30), "offered"),
                # :40 is not recorded yet (its events were on their way); s2 claimed it and writes it back
            ],
            latest={("report", "prod"): T0 + timedelta(seconds=30)},
        ),
        failures=1,
    )
    watch = GenerationWatch(cluster.store, "alpha")
    scheduler = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(EVERY_10S))), window=60.0)
    scheduler.recovery = Recovery(
        cluster.store, record, watch, "alpha", scheduler.reporter, settle=SETTLE, check_every=0.0
    )
    lead(scheduler)
    for second in (0, 10, 20, 30, 40):
        scheduler.tick(T0 + timedelta(seconds=second))
    assert [o.scheduled_at.second for o in cluster.published()] == [10, 20, 30, 40]
    known = watch.marker

    forget_everything(cluster)  # Redis restarted empty: lease, cursors, claims, the record, the marker
    s2 = GenerationWatch(cluster.store, "s2")
    s2.marker = known  # a supervisor that knew the old generation notices, and writes its claim back
    s2.on_loss(lambda: cluster.store.restore_claims([RestoredClaim(run_id(40), "s2", "i2", settled=False)]))
    assert not s2.check().open and s2.detected == 1
    scheduler.election.step_down("the lease is gone")
    epoch = lead(scheduler)

    assert scheduler.tick(T0 + timedelta(seconds=42)) <= 15  # holds: the supervisors write back their claims
    assert scheduler.tick(T0 + timedelta(seconds=46)) <= 15
    assert cluster.published() == [] and watch.detected == 1
    with pytest.raises(KirbyError):  # tick logs it; the record is read again at the next tick
        scheduler.recovery.ready(T0 + timedelta(seconds=48), epoch, scheduler.snapshot)
    scheduler.tick(T0 + timedelta(seconds=50))

    offers = cluster.published()
    # :30 was published and never claimed: again; :40 (claimed by s2) and :50 (the gap) follow the
    # rebuilt cursor. :10 ran and :20 cannot be accounted for: fenced, not published again.
    assert [(o.scheduled_at.second, o.epoch) for o in offers] == [(30, epoch), (40, epoch), (50, epoch)]
    assert cluster.store.get_claim(run_id(10)).settled and cluster.store.get_claim(run_id(20)).settled
    assert not cluster.store.claim_run(run_id(40), "s3", generation=watch.marker)  # s2's, written back
    assert cluster.store.claim_run(run_id(30), "s3", generation=watch.marker)  # open again
    generation = cluster.store.check_generation(watch.marker)
    assert generation.open and generation.rebuilt
    skipped = cluster.recorded("skipped")
    assert [e.run_id for e in skipped] == [run_id(20)]
    assert skipped[0].data["error"].startswith("lease store amnesia: claimed by s9")
    assert cluster.store.get_cursor("report:prod:1") == T0 + timedelta(seconds=50)


def test_a_fresh_store_is_not_amnesia(cluster):
    watch = GenerationWatch(cluster.store, "alpha")
    scheduler = cluster.leader("alpha", StaticScheduleSource(snapshot(entry(EVERY_10S))))
    scheduler.recovery = Recovery(
        cluster.store, FlakyRecord(RunRecord(), failures=99), watch, "alpha", scheduler.reporter, SETTLE, 0.0
    )
    lead(scheduler)
    scheduler.tick(T0)
    scheduler.tick(T0 + timedelta(seconds=10))
    assert [o.scheduled_at.second for o in cluster.published()] == [10]
    assert watch.detected == 0 and watch.open
