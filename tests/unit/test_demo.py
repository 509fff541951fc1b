"""Importing into the script database (SQLite and PostgreSQL): contents, all-or-nothing, --force, the CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from test_demo_parse import DOCUMENT_ERRORS, FILE_ERRORS, FIXTURES, LOAD_ERRORS, base_document, broken, write

from kirby.cli import main
from kirby.demo import DEMO_FILE, SHORT_DEMO_FILE, import_file
from kirby.errors import DemoImportError
from kirby.models import (
    Base,
    CatchUp,
    ConfigKey,
    ConfigScope,
    Context,
    Environment,
    Ext,
    Job,
    JobType,
    NotificationGroup,
    Overlap,
    Schedule,
    Suspension,
    User,
)

ROOT = Path(__file__).resolve().parents[2]


def row_counts(db) -> dict[str, int]:
    with db.session() as session:
        return {t.name: session.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def snapshot(db) -> tuple:
    """Row counts of every table plus every job's contexts and versions: what an import could change."""
    with db.session() as session:
        contexts = sorted(
            (c.job.name, c.environment.name, c.package_version, c.enabled) for c in session.scalars(select(Context))
        )
    return row_counts(db), contexts


@pytest.fixture
def settings(database_url, make_settings):
    return make_settings(SQLALCHEMY_DATABASE_URI=database_url)


def test_original_style_file_keeps_every_quirk(db, settings):
    notes = import_file(db, settings, FIXTURES / "original_style.json")
    assert notes == [
        "note: JOBS.aggregate_rain is a daemon (it runs continuously); its scheduled_param ('*/2 * * * *') "
        "is stored disabled and never fires",
        "note: environment 'staging' is not in ENVS; created it, its contexts are disabled (enable them in the web UI)",
        "note: environment 'live' is not in ENVS; created it, its contexts are disabled (enable them in the web UI)",
    ]
    with db.session() as session:
        assert {e.name: e.description for e in session.scalars(select(Environment))} == {
            "dev": "Development",
            "staging": "staging",
            "live": "live",
        }
        contexts = {(c.job.name, c.environment.name): c for c in session.scalars(select(Context))}
        assert {key: (c.package_name, c.package_version, c.enabled) for key, c in contexts.items()} == {
            ("fetch_weather", "dev"): ("fetch_weather", "0.1", True),
            ("fetch_weather", "staging"): ("fetch_weather", "0.0.9", False),
            ("fetch_weather", "live"): ("fetch_weather", "1.2.0", False),
            ("aggregate_rain", "dev"): ("aggregate_rain", "0.1", True),
            ("daily_summary", "dev"): ("daily_summary", "0.1", True),
            ("daily_summary", "live"): ("daily_summary", "1.0", False),
        }
        schedules = {(s.context.job.name, s.context.environment.name): s for s in session.scalars(select(Schedule))}
        assert {key: (s.cron, s.timezone, s.enabled) for key, s in schedules.items()} == {
            ("aggregate_rain", "dev"): ("*/2 * * * *", "UTC", False),
            ("daily_summary", "dev"): ("15 6 * * mon-fri", "UTC", True),
            ("daily_summary", "live"): ("15 6 * * mon-fri", "UTC", True),
        }
        config = {
            (k.scope, k.job.name if k.job else k.context and str(k.context), k.key): k.value
            for k in session.scalars(select(ConfigKey))
        }
        assert config[(ConfigScope.GLOBAL, None, "USE_TLS")] == "false"
        assert config[(ConfigScope.GLOBAL, None, "UNIT_COST")] == "0.8"
        assert config[(ConfigScope.GLOBAL, None, "BATCH_SIZE")] == "50"
        assert config[(ConfigScope.JOB, "fetch_weather", "MAX_STATIONS")] == "120"
        assert config[(ConfigScope.JOB, "daily_summary", "DRY_RUN")] == "true"
        assert config[(ConfigScope.CONTEXT, "daily_summary:live", "DRY_RUN")] == "false"
        assert config[(ConfigScope.CONTEXT, "fetch_weather:staging", "WEATHER_API")] == "http://staging.example:8000"
        assert len(config) == 4 + 5 + 3  # global, job, context: none lost
        groups = {g.name: sorted(e.email for e in g.emails) for g in session.scalars(select(NotificationGroup))}
        assert groups == {"watchers": ["alice@local.local", "bob@local.local"], "nobody": []}
        assert sorted((n.job.name, n.group.name) for j in session.scalars(select(Job)) for n in j.notifications) == [
            ("aggregate_rain", "watchers"),
            ("daily_summary", "nobody"),
            ("fetch_weather", "watchers"),
        ]
        assert sorted(session.scalars(select(Ext.name))) == ["DB/Weather", "stations"]
        user = session.scalar(select(User))
        assert (user.username, user.is_admin) == ("demo", True)


@pytest.mark.parametrize("path", [DEMO_FILE, SHORT_DEMO_FILE], ids=["demo", "short_demo"])
def test_project_demo_files_import_cleanly(db, settings, path):
    assert import_file(db, settings, path) == []  # no quirks in our own files
    with db.session() as session:
        jobs = {job.name: job for job in session.scalars(select(Job))}
        assert {JobType.SCHEDULED, JobType.DAEMON} <= {job.type for job in jobs.values()}
        assert all(c.enabled for job in jobs.values() for c in job.contexts)
        assert session.scalar(select(User).where(User.username == "demo")).is_admin
        assert any(len(s.cron.split()) == 6 for s in session.scalars(select(Schedule)))


def test_project_demo_exercises_every_feature(db, settings):
    import_file(db, settings, DEMO_FILE)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Environment)) >= 3
        assert {k.scope for k in session.scalars(select(ConfigKey))} == set(ConfigScope)
        assert {k.scope for k in session.scalars(select(ConfigKey).where(ConfigKey.secret))} >= {
            ConfigScope.GLOBAL,
            ConfigScope.CONTEXT,
        }
        schedules = list(session.scalars(select(Schedule)))
        assert {s.timezone for s in schedules} >= {"UTC", "Europe/Paris", "America/New_York"}
        assert {s.catchup for s in schedules} == set(CatchUp)
        assert {s.overlap for s in schedules} >= {Overlap.FORBID, Overlap.REPLACE}
        assert any(s.retries for s in schedules) and any(s.timeout_seconds for s in schedules)
        assert session.scalar(select(func.count()).select_from(NotificationGroup)) >= 2
        assert {s.job is None for s in session.scalars(select(Suspension))} == {True, False}
        assert {u.role.value for u in session.scalars(select(User))} == {"admin", "viewer"}
        assert session.scalar(select(func.count()).select_from(Ext)) >= 1


@pytest.mark.parametrize("name", ["demo.json", "short_demo.json"])
def test_root_demo_files_are_the_packaged_ones(name):
    """Kept once: the clone's root files are links to the package's (which a wheel ships)."""
    assert (ROOT / name).is_symlink() and (ROOT / name).resolve() == (DEMO_FILE.parent / name).resolve()


def test_demo_files_run_the_example_packages_that_are_built():
    spec = importlib.util.spec_from_file_location("examples_build", ROOT / "examples" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for path in (DEMO_FILE, SHORT_DEMO_FILE):
        for name, job in json.loads(path.read_text())["JOBS"].items():
            for version in job["package_version"].values():
                assert (job["package_name"], version) in build.EXAMPLES, (path.name, name)


def test_every_error_rolls_back_everything(db, settings, tmp_path):
    """Each broken file, imported with --force over a filled database, changes nothing at all."""
    import_file(db, settings, write(tmp_path, base_document(), "base.json"))
    import_file(db, settings, FIXTURES / "original_style.json", force=True)
    before = snapshot(db)
    cases = [(i, write(tmp_path, broken(m), f"{i}.json"), text) for i, m, text in DOCUMENT_ERRORS + LOAD_ERRORS]
    cases += [(i, FIXTURES / name, f"{FIXTURES / name}: {text}") for i, name, text in FILE_ERRORS]
    cases.append(
        (
            "duplicate",
            FIXTURES / "duplicate_job.json",
            "JOBS.a: this name appears twice in the same JSON object; keep only one",
        )
    )
    for case, path, expected in cases:
        with pytest.raises(DemoImportError) as caught:
            import_file(db, settings, path, force=True)
        assert str(caught.value) == expected, case
        assert snapshot(db) == before, f"{case} changed the database"


def test_an_error_late_in_loading_undoes_the_force_replacement(db, settings, tmp_path):
    import_file(db, settings, write(tmp_path, base_document(), "base.json"))
    before = snapshot(db)
    document = base_document()
    document["JOBS"]["sensor_orders"]["package_version"]["dev"] = "9.9"
    document["SUSPENSIONS"][0]["job"] = "unknown"  # found after the old jobs were deleted
    with pytest.raises(DemoImportError, match=r"^SUSPENSIONS\[0\]\.job: 'unknown' is not a job"):
        import_file(db, settings, write(tmp_path, document), force=True)
    assert snapshot(db) == before


def test_a_database_with_jobs_is_refused_without_force(db, settings, tmp_path):
    import_file(db, settings, write(tmp_path, base_document(), "base.json"))
    before = snapshot(db)
    with pytest.raises(DemoImportError) as caught:
        import_file(db, settings, SHORT_DEMO_FILE)
    assert str(caught.value) == "the database already holds 2 jobs; use --force to import anyway"
    assert snapshot(db) == before


def test_force_replaces_jobs_of_the_same_name_and_adds_the_rest(db, settings, tmp_path):
    import_file(db, settings, write(tmp_path, base_document(), "base.json"))
    document = base_document()
    del document["JOBS"]["sensor_cash"]
    document["JOBS"]["sensor_orders"]["package_version"] = {"dev": "2.0", "prod": "2.0"}
    document["JOBS"]["fresh"] = {"type": "daemon", "package_version": {"dev": "1.0"}, "notification_group": "sysadmins"}
    document["ENV_VARS"]["GLOBAL"] = {"BROKER": "10.0.0.1:9092"}
    document["NOTIFICATION_GROUPS"]["sysadmins"] = ["bob@local.local"]
    document["SUSPENSIONS"] = [
        {
            "job": "sensor_cash",
            "starts_at": "2027-01-01T00:00:00+00:00",
            "ends_at": "2027-01-02T00:00:00+00:00",
            "reason": "a job of the database",
        }
    ]
    notes = import_file(db, settings, write(tmp_path, document), force=True)
    assert notes == [
        "note: environment 'prod' is not in ENVS; created it, its contexts are disabled (enable them in the web UI)",
        "note: user 'demo' already exists; kept unchanged (password and role not changed)",
    ]
    with db.session() as session:
        contexts = sorted((c.job.name, c.environment.name, c.package_version) for c in session.scalars(select(Context)))
        assert contexts == [
            ("fresh", "dev", "1.0"),
            ("sensor_cash", "dev", "1.0.5"),
            ("sensor_orders", "dev", "2.0"),
            ("sensor_orders", "prod", "2.0"),
        ]
        suspensions = [(s.job.name, s.reason) for s in session.scalars(select(Suspension))]
        assert suspensions == [("sensor_cash", "a job of the database")]  # sensor_orders' went with it
        assert list(session.scalars(select(ConfigKey.value).where(ConfigKey.key == "BROKER"))) == ["10.0.0.1:9092"]
        group = session.scalar(select(NotificationGroup))
        assert sorted(e.email for e in group.emails) == ["alice@local.local", "bob@local.local"]
        assert session.scalar(select(func.count()).select_from(User)) == 1
    # The undeclared environment exists now; a re-import still keeps its contexts disabled.
    notes = import_file(db, settings, write(tmp_path, document), force=True)
    assert notes[0] == (
        "note: environment 'prod' is not in ENVS; it exists already, the new contexts in it are "
        "disabled (enable them in the web UI)"
    )
    with db.session() as session:
        assert [
            c.enabled for c in session.scalars(select(Context).join(Environment).where(Environment.name == "prod"))
        ] == [False]


@pytest.mark.slow
def test_a_five_megabyte_file_imports(db, settings, tmp_path):
    document = {
        "ENVS": {"dev": "Development", "prod": "Production"},
        "JOBS": {},
        "NOTIFICATION_GROUPS": {"ops": ["ops@example.com"]},
    }
    job = base_document()["JOBS"]["sensor_orders"]
    job["notification_group"] = "ops"
    job["package_version"]["prod"] = "1.0.6"
    job["config"]["JOB"].update({f"KEY_{i}": "x" * 40 for i in range(6)})
    count = 5_000_000 // len(json.dumps(job)) + 1
    document["JOBS"] = {f"job_{index:05d}": job for index in range(count)}
    path = write(tmp_path, json.dumps(document))
    assert path.stat().st_size >= 5_000_000
    assert import_file(db, settings, path) == []
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == len(document["JOBS"])
        assert session.scalar(select(func.count()).select_from(Schedule)) == 2 * len(document["JOBS"])


# ---- the command line: `kirby demo` -------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SQLALCHEMY_DATABASE_URI", f"sqlite:///{tmp_path / 'kirby.db'}")
    monkeypatch.setenv("KIRBY_EMBEDDED_PATH", str(tmp_path / "embedded.db"))
    return tmp_path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(["demo", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_imports_the_default_demo(cli_env, capsys):
    assert run_cli(capsys) == (0, "demo data inserted in the database\n", "")


def test_cli_prints_notes_then_success(cli_env, capsys):
    code, out, err = run_cli(capsys, "--json-file-path", str(FIXTURES / "original_style.json"))
    assert code == 0
    assert out.splitlines()[-1] == "demo data inserted in the database"
    assert [line.split(" ")[0] for line in out.splitlines()[:-1]] == ["note:"] * 3


def test_cli_error_is_one_line_and_exit_1(cli_env, capsys, tmp_path):
    path = write(tmp_path, broken({c[0]: c[1] for c in DOCUMENT_ERRORS}["bad-minute"]))
    code, out, err = run_cli(capsys, "--json_file_path", str(path))
    assert (code, out) == (1, "")
    assert err == "Error: JOBS.sensor_orders.scheduled_param.minute: '*/70' is not a valid minute field\n"
    assert not (tmp_path / "kirby.db").exists()  # a bad file is refused before the database is touched


def test_cli_refuses_a_filled_database_unless_forced(cli_env, capsys):
    assert run_cli(capsys, "--json_file_path", str(SHORT_DEMO_FILE))[0] == 0
    code, out, err = run_cli(capsys, "--json_file_path", str(SHORT_DEMO_FILE))
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == "Error: the database already holds 2 jobs; use --force to import anyway"
    code, out, err = run_cli(capsys, "--json_file_path", str(SHORT_DEMO_FILE), "--force")
    assert (code, out.splitlines()[-1]) == (0, "demo data inserted in the database")
