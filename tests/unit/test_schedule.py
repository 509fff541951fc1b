"""The schedule document (build_schedule, resolve_config, manual_offer) and its parsed view."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from kirby.errors import KirbyError
from kirby.events import Offer
from kirby.models import (
    CatchUp,
    ConfigKey,
    ConfigScope,
    Context,
    Environment,
    Job,
    JobType,
    Overlap,
    Schedule,
    Suspension,
)
from kirby.schedule import offer_for_slot, parse_schedule
from kirby.schedule.document import DatabaseScheduleSource, build_schedule, manual_offer, resolve_config

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def populate(session) -> dict[str, Context]:
    prod, dev = Environment(name="prod"), Environment(name="dev")
    report = Job(name="report", type=JobType.SCHEDULED, module="report.main", run_as="kirby-reports")
    feed = Job(name="feed", type=JobType.DAEMON)
    off = Job(name="off", type=JobType.SCHEDULED, enabled=False)
    session.add_all([prod, dev, report, feed, off])
    session.flush()
    contexts = {
        "report:prod": Context(job=report, environment=prod, package_name="report-pkg", package_version="1.2.0"),
        "report:dev": Context(
            job=report, environment=dev, package_name="report-pkg", package_version="1.3.0", enabled=False
        ),
        "feed:prod": Context(job=feed, environment=prod, package_name="feed-pkg", package_version="0.1"),
        "off:prod": Context(job=off, environment=prod, package_name="off-pkg", package_version="1"),
    }
    session.add_all(contexts.values())
    session.flush()
    session.add_all(
        [
            Schedule(
                context=contexts["report:prod"],
                cron="*/5 * * * *",
                timezone="Europe/Paris",
                misfire_grace_seconds=60,
                catchup=CatchUp.ALL,
                overlap=Overlap.REPLACE,
                timeout_seconds=30,
                retries=2,
            ),
            Schedule(context=contexts["report:prod"], cron="0 3 * * *", enabled=False),
            Schedule(context=contexts["off:prod"], cron="* * * * *"),
            ConfigKey(scope=ConfigScope.GLOBAL, key="REGION", value="eu"),
            ConfigKey(scope=ConfigScope.GLOBAL, key="TOKEN", value="global-token", secret=True),
            ConfigKey(scope=ConfigScope.GLOBAL, key="LEVEL", value="info"),
            ConfigKey(scope=ConfigScope.JOB, job=report, key="LEVEL", value="debug"),
            ConfigKey(scope=ConfigScope.JOB, job=report, key="TOKEN", value="job-token", secret=False),
            ConfigKey(
                scope=ConfigScope.CONTEXT, context=contexts["report:prod"], key="TOKEN", value="ctx", secret=True
            ),
            ConfigKey(scope=ConfigScope.JOB, job=feed, key="LEVEL", value="warning"),
            Suspension(
                job=report, starts_at=NOW - timedelta(hours=1), ends_at=NOW + timedelta(hours=1), reason="maintenance"
            ),
            Suspension(job=report, starts_at=NOW - timedelta(hours=3), ends_at=NOW - timedelta(hours=2), reason="over"),
            Suspension(job=None, starts_at=NOW + timedelta(days=1), ends_at=NOW + timedelta(days=2), reason="freeze"),
            Suspension(job=feed, starts_at=NOW, ends_at=NOW + timedelta(minutes=5), reason="feed only"),
        ]
    )
    return contexts


def test_resolve_config_precedence_context_over_job_over_global(db):
    with db.session() as session:
        contexts = populate(session)
        values, secrets = resolve_config(session, contexts["report:prod"])
        assert values == {"REGION": "eu", "TOKEN": "ctx", "LEVEL": "debug"}
        assert secrets == ("TOKEN",)
        # On dev, the job's non-secret TOKEN wins over the global secret one: not secret there.
        values, secrets = resolve_config(session, contexts["report:dev"])
        assert values == {"REGION": "eu", "TOKEN": "job-token", "LEVEL": "debug"}
        assert secrets == ()


def test_build_schedule_lists_enabled_contexts_with_schedules_config_and_live_suspensions(db):
    with db.session() as session:
        populate(session)
        document = build_schedule(session, NOW)
    json.dumps(document)  # JSON-ready as is
    assert document["generated_at"] == NOW.isoformat()
    by_name = {(c["job"], c["environment"]): c for c in document["contexts"]}
    assert set(by_name) == {("report", "prod"), ("feed", "prod")}  # disabled context and job absent
    report = by_name[("report", "prod")]
    assert report["job_type"] == "scheduled" and report["package"] == "report-pkg" and report["version"] == "1.2.0"
    assert report["module"] == "report.main" and report["run_as"] == "kirby-reports"
    assert report["config"] == {"REGION": "eu", "TOKEN": "ctx", "LEVEL": "debug"} and report["secrets"] == ["TOKEN"]
    first, second = report["schedules"]
    assert first | {"id": 0} == {
        "id": 0,
        "name": "",
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "misfire_grace_seconds": 60,
        "catchup": "all",
        "overlap": "replace",
        "timeout_seconds": 30,
        "retries": 2,
        "enabled": True,
        "dst_fall_back": "auto",
        "dst_spring_forward": "auto",
    }
    assert second["enabled"] is False and second["catchup"] == "latest" and second["misfire_grace_seconds"] == 300
    assert [s["reason"] for s in report["suspensions"]] == ["maintenance", "freeze"]
    assert [s["all_jobs"] for s in report["suspensions"]] == [False, True]
    feed = by_name[("feed", "prod")]
    assert feed["job_type"] == "daemon" and feed["schedules"] == []
    assert feed["config"]["LEVEL"] == "warning" and feed["secrets"] == ["TOKEN"]
    assert [s["reason"] for s in feed["suspensions"]] == ["feed only", "freeze"]


def test_parse_schedule_round_trip_and_offer_for_slot(db):
    with db.session() as session:
        populate(session)
    snapshot = DatabaseScheduleSource(db).fetch(NOW)
    assert snapshot.generated_at == NOW
    assert [e.job for e in snapshot.scheduled] == ["report"] and [e.job for e in snapshot.daemons] == ["feed"]
    entry = snapshot.scheduled[0]
    rule = entry.schedules[0]
    assert entry.schedule_key(rule) == f"report:prod:{rule.id}"
    assert entry.suspension_at(NOW).reason == "maintenance"
    assert entry.suspension_at(NOW + timedelta(hours=1)) is None  # the end is exclusive
    instant = datetime(2026, 3, 1, 13, 5, tzinfo=timezone.utc)
    offer = offer_for_slot(entry, rule, instant, epoch=7, now=NOW)
    assert offer.run_id == offer.slot_id == "report:prod:20260301T130500Z"
    assert (offer.epoch, offer.attempt, offer.trigger, offer.offered_at) == (7, 1, "schedule", NOW)
    assert (offer.package, offer.version, offer.module) == ("report-pkg", "1.2.0", "report.main")
    assert (offer.timeout_seconds, offer.overlap, offer.retries) == (30, "replace", 2)
    assert offer.config["TOKEN"] == "ctx" and offer.secrets == ("TOKEN",)
    assert offer.context_id == entry.context_id
    assert offer.run_as == "kirby-reports" and Offer.from_json(offer.to_json()).run_as == "kirby-reports"
    assert snapshot.daemons[0].run_as is None  # no run_as: the supervisors' KIRBY_RUN_USER
    assert snapshot.secret_values() == {"ctx", "global-token"}  # every supervisor masks them in every run


def test_manual_offer(db):
    with db.session() as session:
        contexts = populate(session)
        offer = manual_offer(session, contexts["report:prod"].id, NOW)
        other = manual_offer(session, contexts["report:prod"].id, NOW)
        with pytest.raises(KirbyError, match="daemon"):
            manual_offer(session, contexts["feed:prod"].id, NOW)
        with pytest.raises(KirbyError, match="no context with id 999"):
            manual_offer(session, 999, NOW)
    assert offer.run_id.startswith("report:prod:manual-") and len(offer.run_id.split("manual-")[1]) == 32
    assert offer.run_id != other.run_id and offer.slot_id == offer.run_id
    assert (offer.epoch, offer.trigger, offer.scheduled_at, offer.attempt) == (None, "manual", NOW, 1)
    assert (offer.timeout_seconds, offer.overlap, offer.retries) == (30, "replace", 2)  # first enabled schedule
    assert offer.config["LEVEL"] == "debug"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("generated_at"), "schedule.generated_at is missing"),
        (lambda d: d["contexts"][0].update(job=3), r"contexts\[0\].job=3 has the wrong type"),
        (lambda d: d["contexts"][0]["schedules"][0].update(catchup="never"), "use one of skip, latest, all"),
        (lambda d: d["contexts"][0]["suspensions"][0].update(ends_at="soon"), "is not an ISO 8601 time"),
        (lambda d: d.update(contexts={}), "schedule.contexts={} has the wrong type"),
    ],
)
def test_parse_schedule_names_the_bad_field(mutate, message):
    document = {
        "generated_at": NOW.isoformat(),
        "contexts": [
            {
                "context_id": 1,
                "job": "j",
                "job_type": "scheduled",
                "environment": "e",
                "package": "p",
                "version": "1",
                "schedules": [{"id": 1, "cron": "* * * * *"}],
                "suspensions": [{"id": 1, "starts_at": NOW.isoformat(), "ends_at": NOW.isoformat()}],
            }
        ],
    }
    parse_schedule(document)  # valid as is
    mutate(document)
    with pytest.raises(KirbyError, match=message):
        parse_schedule(document)


def test_database_source_names_the_database_when_it_cannot_read(make_settings, tmp_path):
    from kirby.db import open_database

    database = open_database(make_settings(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'empty.db'}"), migrate=False)
    try:
        with pytest.raises(
            KirbyError, match=r"cannot read the schedule from sqlite:///.*empty\.db: .*SQLALCHEMY_DATABASE_URI"
        ):
            DatabaseScheduleSource(database).fetch(NOW)
    finally:
        database.dispose()
