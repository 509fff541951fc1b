"""kirby export / kirby apply as package calls, on SQLite and PostgreSQL: the diff, idempotence,
prune, all-or-nothing, kept secrets, in-place updates, YAML."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import func, select

from kirby.db import open_database
from kirby.demo import DEMO_FILE, import_file
from kirby.demo.files import apply_file, export_text
from kirby.errors import DemoImportError
from kirby.models import ConfigKey, Context, Job, Suspension


@pytest.fixture
def settings(make_settings, database_url):
    return make_settings(SQLALCHEMY_DATABASE_URI=database_url)


def exported(db, with_secrets=False) -> dict:
    return json.loads(export_text(db, "json", with_secrets)[0])


def write(tmp_path, body: dict, name="file.json"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body) if name.endswith(".yaml") else json.dumps(body))
    return path


def test_apply_of_the_demo_file_matches_the_import_and_is_idempotent(db, settings, tmp_path, make_settings):
    plan = apply_file(db, settings, DEMO_FILE, prune=False, dry_run=False)
    assert {str(c) for c in plan.changes} >= {"created job hello", "created environment prod", "created user demo"}
    assert apply_file(db, settings, DEMO_FILE, prune=True, dry_run=False).changes == []  # applying twice
    imported = make_settings(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'imported.db'}")
    other = open_database(imported)
    try:
        import_file(other, imported)
        assert exported(other, with_secrets=True) == exported(db, with_secrets=True)
    finally:
        other.dispose()


def test_round_trip_export_dry_run_edit_apply_export(db, settings, tmp_path):
    import_file(db, settings)
    with db.session() as s:
        context_ids = dict(
            s.execute(select(Context.id, Context.package_version).join(Job).where(Job.name == "hello")).all()
        )
    first = exported(db)
    path = write(tmp_path, first)
    assert apply_file(db, settings, path, prune=True, dry_run=True).changes == []  # nothing to do

    edited = json.loads(json.dumps(first))
    edited["JOBS"]["hello"]["package_version"]["prod"] = "1.1.0"
    edited["JOBS"]["hello"]["scheduled_param"]["cron"] = "*/10 * * * *"
    del edited["JOBS"]["ticker"]
    edited["ENV_VARS"]["GLOBAL"]["NEW_KEY"] = "new"
    edited["NOTIFICATION_GROUPS"]["ops"] = ["ops@example.com", "pager@example.com"]
    edited["SUSPENSIONS"] = []
    path = write(tmp_path, edited)

    dry = apply_file(db, settings, path, prune=False, dry_run=True)
    assert [str(c) for c in dry.changes] == [
        "created config NEW_KEY",
        "changed group ops",
        "changed job hello (package_version, scheduled_param)",
    ]
    assert "kept job ticker: not in the file (--prune deletes it)" in dry.notes
    assert exported(db) == first  # the dry run wrote nothing

    plan = apply_file(db, settings, path, prune=True, dry_run=False)
    assert {str(c) for c in plan.changes} >= {
        "deleted job ticker",
        "changed job hello (package_version, scheduled_param)",
    }
    assert any(c.action == "deleted" and c.kind == "suspension" for c in plan.changes)
    after = exported(db)
    assert after == edited
    assert apply_file(db, settings, path, prune=True, dry_run=False).changes == []
    with db.session() as s:  # updated in place: the contexts (and the runs pointing at them) kept their ids
        ids = dict(s.execute(select(Context.id, Context.package_version).join(Job).where(Job.name == "hello")).all())
        assert set(ids) == set(context_ids)
        assert s.scalar(select(func.count()).select_from(Suspension)) == 0


def test_secrets_are_left_out_and_kept(db, settings, tmp_path):
    import_file(db, settings)
    plain, full = exported(db), exported(db, with_secrets=True)
    assert plain["ENV_VARS"]["GLOBAL"]["REPORTS_API_TOKEN"] == {"secret": True}
    assert full["ENV_VARS"]["GLOBAL"]["REPORTS_API_TOKEN"]["value"]
    plain["JOBS"]["hello"]["description"] = "changed"
    apply_file(db, settings, write(tmp_path, plain), prune=True, dry_run=False)
    assert exported(db, with_secrets=True)["ENV_VARS"] == full["ENV_VARS"]  # the stored secret stayed
    plain["ENV_VARS"]["GLOBAL"]["BRAND_NEW"] = {"secret": True}
    with pytest.raises(DemoImportError, match="BRAND_NEW: a secret without its value"):
        apply_file(db, settings, write(tmp_path, plain), prune=True, dry_run=False)
    with pytest.raises(DemoImportError, match="a secret without its value"):  # the import needs values
        import_file(db, settings, write(tmp_path, plain), force=True)


def test_a_bad_file_changes_nothing(db, settings, tmp_path):
    import_file(db, settings)
    before = exported(db, with_secrets=True)
    document = exported(db)
    document["JOBS"]["hello"]["package_version"]["prod"] = "2.0.0"
    document["JOBS"]["hello"]["notification_group"] = "nobody"
    with pytest.raises(DemoImportError, match="JOBS.hello.notification_group: 'nobody' is not defined"):
        apply_file(db, settings, write(tmp_path, document), prune=True, dry_run=False)
    document["JOBS"]["hello"]["notification_group"] = "ops"
    document["SUSPENSIONS"] = [
        {"job": "ghost", "starts_at": "2026-01-01T00:00:00+00:00", "ends_at": "2026-01-02T00:00:00+00:00"}
    ]
    with pytest.raises(DemoImportError, match="'ghost' is not a job"):  # found after the jobs were written
        apply_file(db, settings, write(tmp_path, document), prune=True, dry_run=False)
    assert exported(db, with_secrets=True) == before


def test_yaml_round_trip_and_strict_yaml(db, settings, tmp_path):
    import_file(db, settings)
    text, _ = export_text(db, "yaml", with_secrets=False)
    path = tmp_path / "kirby.yaml"
    path.write_text(text)
    assert apply_file(db, settings, path, prune=True, dry_run=False).changes == []
    path.write_text("ENVS: {dev: a, dev: b}\nJOBS: {}\n")
    with pytest.raises(DemoImportError, match="the key 'dev' appears twice"):
        apply_file(db, settings, path, prune=False, dry_run=True)
    path.write_text(
        "ENVS: {}\nJOBS: {}\nSUSPENSIONS:\n- {starts_at: 2026-12-24T18:00:00+01:00, ends_at: 2026-12-26T08:00:00+01:00}\n"
    )
    plan = apply_file(db, settings, path, prune=False, dry_run=False)  # unquoted instants are read as text
    assert [c.kind for c in plan.changes] == ["suspension"]
    path.write_text("- not a mapping\n")
    with pytest.raises(DemoImportError, match="expected a mapping with ENVS and JOBS"):
        apply_file(db, settings, path, prune=False, dry_run=True)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ConfigKey)) > 0


def test_notify_on_events_and_webhooks_round_trip(db, settings, tmp_path):
    """Every notify_on event and a group's webhooks survive export → apply; the webhook's secret is
    left out of the export and kept by apply, like a secret config value."""
    import_file(db, settings)
    first = exported(db)
    job = next(name for name, body in first["JOBS"].items() if body.get("notification_group"))
    group = first["JOBS"][job]["notification_group"]
    first["JOBS"][job]["notify_on"] = ["lost", "recovery", "suspended"]
    emails = first["NOTIFICATION_GROUPS"][group]
    hook = {"url": "https://hooks.example.com/kirby", "format": "slack", "secret": "hook-secret-123"}
    first["NOTIFICATION_GROUPS"][group] = {"emails": emails, "webhooks": [hook]}
    apply_file(db, settings, write(tmp_path, first), prune=False, dry_run=False)

    second = exported(db)
    assert second["JOBS"][job]["notify_on"] == ["lost", "recovery", "suspended"]
    assert second["NOTIFICATION_GROUPS"][group] == {
        "emails": emails,
        "webhooks": [{"url": hook["url"], "format": "slack"}],  # no secret without --with-secrets
    }
    again = apply_file(db, settings, write(tmp_path, second, "again.json"), prune=True, dry_run=False)
    assert again.changes == []  # idempotent: the file without the secret keeps it
    assert exported(db, with_secrets=True)["NOTIFICATION_GROUPS"][group]["webhooks"][0]["secret"] == "hook-secret-123"
