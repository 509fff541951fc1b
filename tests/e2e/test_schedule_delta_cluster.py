"""A schedule edit reaches running supervisors as a delta and takes effect within ``--wakeup``:
a real ``kirby web`` and two ``kirby supervisor`` processes (embedded backends), a job due every
second whose job-level config names the ledger its script writes to. The config is edited while
they run: every supervisor merges the change (its log says so), runs of slots later than the
edit + ``--wakeup`` (+ a fetch's slack under load) all see the new value, and they keep running."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from kirby.models import ConfigKey, Overlap
from tests.e2e.conftest import new_cluster
from tests.helpers import wait_for

WAKEUP = 2.0
SLACK = 3.0  # a fetch and a publication on a loaded 2-core machine


def ledger_slots(path) -> list[datetime]:
    """The scheduled instants of the runs recorded in a ledger (run ids ``job:env:YYYYmmddTHHMMSSZ``)."""
    if not path.exists():
        return []
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return [datetime.strptime(i.rsplit(":", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc) for i in ids]


@pytest.fixture
def embedded(tmp_path, example_index, shared_venvs):
    cluster = new_cluster(tmp_path, example_index, shared_venvs, None, None)
    yield cluster
    cluster.close()


def test_an_edit_reaches_every_supervisor_as_a_delta_within_wakeup(embedded):
    cluster = embedded
    before, after = cluster.workdir / "before", cluster.workdir / "after"
    cluster.add_job(
        "tick",
        "kirby-example-hello",
        cron="* * * * * *",
        overlap=Overlap.ALLOW,
        config={"KIRBY_RUN_LEDGER": str(before)},
    )
    cluster.start_web()
    for name in ("s1", "s2"):
        cluster.start_supervisor(name, wakeup=WAKEUP)
    wait_for(lambda: len(ledger_slots(before)) >= 3, 180, "no run reached its script")
    with cluster.database.session() as session:
        session.execute(sa.update(ConfigKey).where(ConfigKey.key == "KIRBY_RUN_LEDGER").values(value=str(after)))
    edited = datetime.now(timezone.utc)
    wait_for(lambda: len(ledger_slots(after)) >= 3, 120, "no run saw the edited config")
    for name in ("s1", "s2"):  # the leader and the follower each merged it (no full document)
        wait_for(
            lambda name=name: "schedule: merged the changes since" in cluster.log_of(name),
            60,
            f"{name} did not merge a delta; see {cluster.workdir}/{name}.log",
        )
    late = [slot for slot in ledger_slots(before) if (slot - edited).total_seconds() > WAKEUP + SLACK]
    assert late == [], f"slots after the edit + --wakeup ran with the old config: {late}"
    assert min(ledger_slots(after)) > edited.replace(microsecond=0)  # the new value only after the edit
