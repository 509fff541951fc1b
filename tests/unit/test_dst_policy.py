"""The per-schedule DST policy end to end below the leader: model + migration, import format, the
schedule document and snapshot, the admin form and its preview of the next transition."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from test_demo_parse import base_document, write
from test_web_admin import count, schedule_form
from test_web_support import admin_client, app, seed, settings, viewer_client, web  # noqa: F401

from kirby import dst
from kirby.cron import DstPolicy, FallBack, SpringForward
from kirby.db import alembic_config, make_engine, open_database
from kirby.demo import parse_file
from kirby.errors import KirbyError
from kirby.models import Schedule
from kirby.schedule.snapshot import parse_entry

UTC = timezone.utc


def test_import_format_accepts_the_policy_and_names_a_bad_value(tmp_path):
    document = base_document()
    document["JOBS"]["sensor_orders"]["scheduled_param"] |= {"dst_fall_back": "second", "dst_spring_forward": "skip"}
    spec = parse_file(write(tmp_path, document)).jobs[0].schedule
    assert spec.policies == {"dst_fall_back": FallBack.SECOND, "dst_spring_forward": SpringForward.SKIP}
    bad = copy.deepcopy(document)
    bad["JOBS"]["sensor_orders"]["scheduled_param"]["dst_fall_back"] = "twice"
    with pytest.raises(KirbyError) as error:
        parse_file(write(tmp_path, bad))
    assert str(error.value) == (
        'JOBS.sensor_orders.scheduled_param.dst_fall_back: "twice" is not one of: auto, first, second, both'
    )


def test_snapshot_parses_the_policy_and_refuses_a_bad_one():
    entry = {"context_id": 1, "job": "j", "environment": "e", "package": "p", "version": "1"}
    rule = {"id": 1, "cron": "30 2 * * *", "dst_fall_back": "both", "dst_spring_forward": "skip"}
    parsed = parse_entry(entry | {"schedules": [rule]}).schedules[0]
    assert parsed.dst == DstPolicy("both", "skip")
    assert parse_entry(entry | {"schedules": [{"id": 2, "cron": "0 * * * *"}]}).schedules[0].dst == DstPolicy()
    with pytest.raises(KirbyError, match=r"schedules\[0\]\.dst_spring_forward='later': use one of auto, shift, skip"):
        parse_entry(entry | {"schedules": [rule | {"dst_spring_forward": "later"}]})


def test_migration_0003_gives_existing_schedules_auto(database_url, make_settings):
    engine = make_engine(database_url)
    command.upgrade(alembic_config(engine), "0002")
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO environments (id, name, description) VALUES (1, 'dev', '')"))
        connection.execute(
            sa.text(
                "INSERT INTO jobs (id, name, description, type, enabled, module) VALUES (1, 'j', '', 'scheduled', :t, '')"
            ),
            {"t": True},
        )
        connection.execute(
            sa.text(
                "INSERT INTO contexts (id, job_id, environment_id, package_name, package_version, enabled) "
                "VALUES (1, 1, 1, 'j', '1.0', :t)"
            ),
            {"t": True},
        )
        connection.execute(
            sa.text(
                "INSERT INTO schedules (id, context_id, name, cron, timezone, enabled, misfire_grace_seconds, "
                "catchup, overlap, retries) VALUES (1, 1, '', '0 * * * *', 'Europe/Paris', :t, 300, 'latest', 'forbid', 0)"
            ),
            {"t": True},
        )
    engine.dispose()
    database = open_database(make_settings(SQLALCHEMY_DATABASE_URI=database_url))
    try:
        with database.session() as session:
            schedule = session.get(Schedule, 1)
            assert (schedule.dst_fall_back, schedule.dst_spring_forward) == (FallBack.AUTO, SpringForward.AUTO)
            schedule.dst_fall_back = FallBack.FIRST
        with database.engine.connect() as connection:
            assert connection.execute(sa.text("SELECT dst_fall_back FROM schedules")).scalar() == "first"
    finally:
        database.dispose()


def test_the_admin_form_saves_the_policy(app, admin_client):
    ids = seed(app)
    before = count(app, Schedule)
    form = schedule_form(ids["context_id"], dst_fall_back="both", dst_spring_forward="skip")
    assert admin_client.post("/admin/schedule/new/", data=form).status_code == 302
    assert count(app, Schedule) == before + 1
    with app.extensions["kirby"].database.session() as s:
        schedule = s.scalars(sa.select(Schedule).order_by(Schedule.id.desc())).first()
        assert (schedule.dst_fall_back, schedule.dst_spring_forward) == (FallBack.BOTH, SpringForward.SKIP)
    page = admin_client.get(f"/admin/schedule/edit/?id={schedule.id}").get_data(as_text=True)
    assert "Next DST transition" in page and "dst_fall_back both, dst_spring_forward skip" in page


def test_the_preview_shows_the_next_transition_and_marks_the_slots(app, admin_client):
    url = "/admin/schedule/preview?cron=*/30 * * * *&timezone=Europe/Paris&at=2026-10-20T00:00:00%2B00:00"
    data = admin_client.get(url).get_json()
    assert data["transition"]["transition"] == {
        "kind": "fall back",
        "local": "2026-10-25 03:00 CEST becomes 02:00 CET",
        "utc": "2026-10-25 01:00:00 UTC",
        "shift": "clocks go back 1 h",
    }
    rows = [(r["zone"], r["utc"][11:16], r["mark"]) for r in data["transition"]["rows"]]
    assert rows == [
        ("2026-10-25 01:00:00 CEST", "23:00", ""),
        ("2026-10-25 01:30:00 CEST", "23:30", ""),
        ("2026-10-25 02:00:00 CEST", "00:00", "doubled"),
        ("2026-10-25 02:30:00 CEST", "00:30", "doubled"),
        ("2026-10-25 02:00:00 CET", "01:00", "doubled"),
        ("2026-10-25 02:30:00 CET", "01:30", "doubled"),
        ("2026-10-25 03:00:00 CET", "02:00", ""),
        ("2026-10-25 03:30:00 CET", "02:30", ""),
    ]
    first = admin_client.get(url + "&dst_fall_back=first").get_json()["transition"]
    assert [r["mark"] for r in first["rows"]].count("first pass only") == 2
    spring = admin_client.get(
        "/admin/schedule/preview?cron=30 2 * * *&timezone=America/New_York&at=2027-01-01T00:00:00%2B00:00"
        "&dst_spring_forward=skip"
    ).get_json()["transition"]
    assert spring["transition"]["kind"] == "spring forward"
    assert [(r["wall"][11:16], r["zone"], r["mark"]) for r in spring["rows"]][2] == ("02:30", "", "skipped")
    assert admin_client.get("/admin/schedule/preview?cron=0 * * * *&timezone=UTC").get_json()["transition"] is None
    bad = admin_client.get("/admin/schedule/preview?cron=0 * * * *&timezone=UTC&dst_fall_back=often")
    assert bad.status_code == 400 and "dst_fall_back auto|first|second|both" in bad.get_json()["error"]


def test_around_caps_the_listed_slots_of_an_every_second_schedule():
    transition = dst.next_transition("Europe/Paris", datetime(2026, 10, 1, tzinfo=UTC))
    result = dst.around("* * * * * *", "Europe/Paris", transition)
    assert result["more"] == 3600 - dst.LIMIT and len(result["rows"]) == 2 + 2 * dst.LIMIT + 2
    json.dumps(result)
