"""The leader across whole DST transition days (embedded lease store and bus, ``now`` passed in)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from test_scheduler import cluster, entry, lead, snapshot  # noqa: F401 (fixture)

from kirby.cron import DstPolicy, slots_between
from kirby.schedule import ScheduleRule, StaticScheduleSource

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")
RULES = {
    "hourly": ScheduleRule(id=1, cron="0 * * * *", timezone="Europe/Paris"),
    "quarter": ScheduleRule(id=2, cron="*/15 * * * *", timezone="Europe/Paris"),
    "nightly": ScheduleRule(id=3, cron="30 2 * * *", timezone="Europe/Paris"),
    "nightly-both": ScheduleRule(id=4, cron="30 2 * * *", timezone="Europe/Paris", dst_fall_back="both"),
    "hourly-shift": ScheduleRule(id=5, cron="0 * * * *", timezone="Europe/Paris", dst_spring_forward="shift"),
}


@pytest.mark.parametrize(
    ("day", "counts"),
    [
        ((2026, 10, 25), {"hourly": 25, "quarter": 100, "nightly": 1, "nightly-both": 2, "hourly-shift": 25}),
        ((2026, 3, 29), {"hourly": 23, "quarter": 92, "nightly": 1, "nightly-both": 1, "hourly-shift": 23}),
    ],
)
def test_the_leader_publishes_exactly_the_slots_of_a_transition_day(cluster, day, counts):  # noqa: F811
    source = StaticScheduleSource(snapshot(*(entry(rule, job=job) for job, rule in RULES.items())))
    alpha = cluster.leader("alpha", source, wakeup=3600)
    lead(alpha)
    start = datetime(*day, tzinfo=PARIS).astimezone(UTC) - timedelta(seconds=1)  # 23:59:59 local, the day before
    end = datetime(*day, tzinfo=PARIS).astimezone(UTC) + timedelta(hours=23) - timedelta(seconds=1)
    if counts["hourly"] == 25:
        end += timedelta(hours=2)
    now = start
    while now < end:  # wake exactly when tick says, as run() does
        now += timedelta(seconds=alpha.tick(now))
    offers = cluster.published()
    by_job = {job: [o for o in offers if o.job == job] for job in RULES}
    assert {job: len(found) for job, found in by_job.items()} == counts
    for job, rule in RULES.items():
        expected = list(slots_between(rule.cron, rule.timezone, start, end, rule.dst))
        assert [o.scheduled_at for o in by_job[job]] == expected, job
        assert all(o.offered_at == o.scheduled_at for o in by_job[job]), f"{job}: published late"
    assert len({o.run_id for o in offers}) == len(offers), "run ids must be unique, also in the repeated hour"
    local = [f"{o.scheduled_at.astimezone(PARIS):%H:%M%Z}" for o in by_job["nightly"]]
    assert local == (["02:30CEST"] if counts["hourly"] == 25 else ["03:00CEST"])
    assert RULES["nightly-both"].dst == DstPolicy("both", "auto")
