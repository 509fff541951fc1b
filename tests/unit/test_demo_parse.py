"""Validation of import files (kirby.demo without a database): every error gives its JSON path and fix.

The cases (a valid document in the original Kirby's format, broken variants with the exact error
each gives) are shared with test_demo.py, which runs them against a database to prove rollback.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from kirby.demo import parse_file
from kirby.demo.spec import ConfigValue
from kirby.errors import DemoImportError
from kirby.models import CatchUp, Overlap

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "demo"


def base_document() -> dict:
    return {
        "ENVS": {"dev": "Development"},
        "ENV_VARS": {"GLOBAL": {"BROKER": "127.0.0.1:9092"}},
        "JOBS": {
            "sensor_orders": {
                "description": "Fetch bakery forecast sales",
                "type": "scheduled",
                "package_version": {"dev": "1.0.5"},
                "notification_group": "sysadmins",
                "scheduled_param": {"name": "every two minutes", "hour": "*", "minute": "*/2"},
                "config": {"JOB": {"ORDERS_TOPIC_NAME": "orders"}, "CONTEXT": {"dev": {"API": "http://x"}}},
            },
            "sensor_cash": {"type": "daemon", "package_version": {"dev": "1.0.5"}},
        },
        "EXTS": ["bakery"],
        "USERS": [{"username": "demo", "password": "demo", "role": "admin"}],
        "NOTIFICATION_GROUPS": {"sysadmins": ["alice@local.local"]},
        "SUSPENSIONS": [
            {"job": "sensor_orders", "starts_at": "2026-12-24T18:00:00+01:00", "ends_at": "2026-12-26T08:00:00+01:00"}
        ],
    }


def _set(path: str, value):
    """A mutation that sets (or, with value DELETE, removes) the dotted ``path`` of the document."""

    def mutate(document: dict) -> None:
        *parents, last = path.split("|")
        node = document
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list) and int(last) == len(node):
            node.append(value)
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


DELETE = object()
ORDERS = "JOBS|sensor_orders"
PARAM = "JOBS|sensor_orders|scheduled_param"
CASH = "JOBS|sensor_cash"

# (id, mutation, the error's exact text). Paths in mutations use '|' so keys may contain dots.
DOCUMENT_ERRORS = [
    ("missing-jobs", _set("JOBS", DELETE), "the required key 'JOBS' is missing at the top level"),
    (
        "unknown-top-key",
        _set("JOB", {}),
        "JOB: unknown key; expected one of: ENVS, JOBS, ENV_VARS, EXTS, USERS, NOTIFICATION_GROUPS, SUSPENSIONS",
    ),
    ("missing-type", _set(CASH + "|type", DELETE), "JOBS.sensor_cash: the required key 'type' is missing"),
    (
        "missing-versions",
        _set(CASH + "|package_version", DELETE),
        "JOBS.sensor_cash: the required key 'package_version' is missing",
    ),
    ("missing-password", _set("USERS|0|password", DELETE), "USERS[0]: the required key 'password' is missing"),
    ("envs-wrong-type", _set("ENVS", ["dev"]), "ENVS: is a list; expected a JSON object"),
    (
        "versions-wrong-type",
        _set(CASH + "|package_version", "1.0"),
        "JOBS.sensor_cash.package_version: is a string; expected a JSON object",
    ),
    (
        "empty-versions",
        _set(CASH + "|package_version", {}),
        'JOBS.sensor_cash.package_version: is empty; give the version to run in at least one environment, e.g. {"dev": "1.0.0"}',
    ),
    (
        "config-list",
        _set(ORDERS + "|config|JOB|ORDERS_TOPIC_NAME", ["a"]),
        "JOBS.sensor_orders.config.JOB.ORDERS_TOPIC_NAME: is a list; expected a string, number or boolean",
    ),
    (
        "config-nested",
        _set(ORDERS + "|config|JOB|ORDERS_TOPIC_NAME", {"a": 1}),
        'JOBS.sensor_orders.config.JOB.ORDERS_TOPIC_NAME: is an object; expected a string, number, boolean or {"value": ..., "secret": true}',
    ),
    (
        "config-null",
        _set("ENV_VARS|GLOBAL|BROKER", None),
        'ENV_VARS.GLOBAL.BROKER: is null; use "" for an empty value or remove the key',
    ),
    (
        "config-bad-key",
        _set("ENV_VARS|GLOBAL|MY-KEY", "x"),
        "ENV_VARS.GLOBAL.MY-KEY: 'MY-KEY' is not a valid environment variable name; use letters, digits and '_'",
    ),
    (
        "secret-not-bool",
        _set("ENV_VARS|GLOBAL|TOKEN", {"value": "x", "secret": "yes"}),
        "ENV_VARS.GLOBAL.TOKEN.secret: is a string; expected true or false",
    ),
    (
        "secret-too-short",
        _set("ENV_VARS|GLOBAL|TOKEN", {"value": "ab", "secret": True}),
        "ENV_VARS.GLOBAL.TOKEN.value: secret 'TOKEN' is shorter than 3 characters and could not be masked in logs: "
        "use a longer value, or do not mark it secret",
    ),
    (
        "env-vars-per-env",
        _set("ENV_VARS|prod", {"A": "b"}),
        "ENV_VARS.prod: only GLOBAL is supported here; put values for one environment in JOBS.<job>.config.CONTEXT.prod",
    ),
    (
        "unknown-job-type",
        _set(CASH + "|type", "cron"),
        'JOBS.sensor_cash.type: "cron" is not one of: scheduled, daemon',
    ),
    (
        "typo-key",
        _set(ORDERS + "|schedule_param", {}),
        "JOBS.sensor_orders.schedule_param: unknown key; expected one of: type, package_version, description, "
        "notification_group, scheduled_param, config, package_name, module, enabled, notify_on",
    ),
    (
        "context-without-version",
        _set(ORDERS + "|config|CONTEXT|prod", {"API": "http://y"}),
        "JOBS.sensor_orders.config.CONTEXT.prod: the job does not run in 'prod' (no package_version.prod); "
        "add a version or remove these keys",
    ),
    (
        "bad-minute",
        _set(PARAM + "|minute", "*/70"),
        "JOBS.sensor_orders.scheduled_param.minute: '*/70' is not a valid minute field",
    ),
    (
        "bad-weekday",
        _set(PARAM + "|weekday", "funday"),
        "JOBS.sensor_orders.scheduled_param.weekday: 'funday' is not a valid weekday field",
    ),
    (
        "bad-cron",
        _set(PARAM, {"cron": "* * *"}),
        "JOBS.sensor_orders.scheduled_param.cron: '* * *' is not a cron expression: use 5 fields "
        "(minute hour day month weekday), or 6 with a trailing second field",
    ),
    (
        "cron-and-fields",
        _set(PARAM + "|cron", "* * * * *"),
        "JOBS.sensor_orders.scheduled_param.minute: give either cron or the separate fields, not both",
    ),
    (
        "cron-too-long",
        _set(
            PARAM,
            {
                "minute": ",".join(map(str, range(60))),
                "hour": ",".join(map(str, range(24))),
                "day": ",".join(map(str, range(1, 32))),
            },
        ),
        "JOBS.sensor_orders.scheduled_param: the cron expression is 319 characters long; at most 255 are allowed",
    ),
    (
        "no-time",
        _set(PARAM, {"name": "never"}),
        'JOBS.sensor_orders.scheduled_param: no time given; set cron (e.g. "*/5 * * * *") or minute, hour, ...',
    ),
    (
        "scheduled-without-param",
        _set(PARAM, DELETE),
        "JOBS.sensor_orders: a scheduled job needs scheduled_param (when to run it)",
    ),
    (
        "bad-timezone",
        _set(PARAM + "|timezone", "Mars/Olympus"),
        "JOBS.sensor_orders.scheduled_param.timezone: 'Mars/Olympus' is not an IANA time zone, e.g. \"Europe/Paris\"",
    ),
    (
        "bad-catchup",
        _set(PARAM + "|catchup", "sometimes"),
        'JOBS.sensor_orders.scheduled_param.catchup: "sometimes" is not one of: skip, latest, all',
    ),
    (
        "negative-retries",
        _set(PARAM + "|retries", -1),
        "JOBS.sensor_orders.scheduled_param.retries: -1 is too small; expected at least 0",
    ),
    (
        "zero-timeout",
        _set(PARAM + "|timeout_seconds", 0),
        "JOBS.sensor_orders.scheduled_param.timeout_seconds: 0 is too small; expected at least 1",
    ),
    (
        "grace-as-string",
        _set(PARAM + "|misfire_grace_seconds", "60"),
        "JOBS.sensor_orders.scheduled_param.misfire_grace_seconds: is a string; expected a whole number",
    ),
    (
        "bad-version",
        _set(CASH + "|package_version|dev", "one.two"),
        "JOBS.sensor_cash.package_version.dev: version 'one.two' is not a valid exact version: pin one release, e.g. 1.0.0",
    ),
    (
        "version-number",
        _set(CASH + "|package_version|dev", 1.1),
        'JOBS.sensor_cash.package_version.dev: is a number; write the version as a string, e.g. "1.1"',
    ),
    (
        "bad-package-name",
        _set(CASH + "|package_name", "-bad-"),
        "JOBS.sensor_cash.package_name: package name '-bad-' is not a valid name: use letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit (e.g. kirby-example-hello)",
    ),
    (
        "job-name-not-a-package",
        _set("JOBS|trailing_", {"type": "daemon", "package_version": {"dev": "1"}}),
        "JOBS.trailing_: package name 'trailing_' is not a valid name: use letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit (e.g. kirby-example-hello); the job name is the package name "
        "unless you set package_name",
    ),
    (
        "job-name-with-colon",
        _set("JOBS|a:b", {"type": "daemon", "package_version": {"dev": "1"}}),
        "JOBS[\"a:b\"]: 'a:b' is not a valid job name; use letters, digits, '_', '.' and '-'",
    ),
    (
        "bad-module",
        _set(CASH + "|module", "not a module"),
        "JOBS.sensor_cash.module: module 'not a module' is not a valid Python module path: use e.g. my_script.main",
    ),
    (
        "duplicate-username",
        _set("USERS|1", {"username": "Demo", "password": "x"}),
        "USERS[1]: username 'demo' is listed twice",
    ),
    (
        "bad-username",
        _set("USERS|0|username", "de mo"),
        "USERS[0].username: 'de mo' is not a valid user name: use 1 to 64 letters, digits, '.', '_', '-' or '@', "
        "starting with a letter or digit",
    ),
    ("duplicate-ext", _set("EXTS|1", "bakery"), "EXTS[1]: ext 'bakery' is listed twice"),
    ("bad-role", _set("USERS|0|role", "superuser"), 'USERS[0].role: "superuser" is not one of: admin, viewer'),
    ("empty-password", _set("USERS|0|password", ""), "USERS[0].password: is empty; expected a non-empty string"),
    (
        "bad-email",
        _set("NOTIFICATION_GROUPS|sysadmins", ["alice"]),
        "NOTIFICATION_GROUPS.sysadmins[0]: 'alice' is not an email address",
    ),
    (
        "bad-notify-on",
        _set(ORDERS + "|notify_on", ["sms"]),
        'JOBS.sensor_orders.notify_on[0]: "sms" is not one of: failure, missed',
    ),
    (
        "notify-on-without-group",
        _set(CASH + "|notify_on", ["failure"]),
        "JOBS.sensor_cash.notify_on: needs a notification_group to notify",
    ),
    (
        "naive-suspension",
        _set("SUSPENSIONS|0|starts_at", "2026-12-24T18:00:00"),
        "SUSPENSIONS[0].starts_at: '2026-12-24T18:00:00' has no UTC offset; add one, e.g. \"2026-12-24T18:00:00+00:00\"",
    ),
    (
        "suspension-backwards",
        _set("SUSPENSIONS|0|ends_at", "2026-12-24T17:00:00+01:00"),
        "SUSPENSIONS[0].ends_at: must be after starts_at",
    ),
]

# Found only when writing (they depend on what the database holds): parse accepts them.
LOAD_ERRORS = [
    (
        "undefined-group",
        _set(ORDERS + "|notification_group", "admins"),
        "JOBS.sensor_orders.notification_group: 'admins' is not defined in NOTIFICATION_GROUPS",
    ),
    (
        "suspension-unknown-job",
        _set("SUSPENSIONS|0|job", "nope"),
        "SUSPENSIONS[0].job: 'nope' is not a job of this file or of the database",
    ),
]

# (id, file in tests/fixtures/demo, the error's text after the file's name).
FILE_ERRORS = [
    ("not-utf8", "not_utf8.json", "is not UTF-8 text (byte 0xe9 at offset 19); save it as UTF-8"),
    ("empty", "empty.json", "the file is empty; expected a JSON object with ENVS and JOBS"),
    ("malformed", "malformed.json", "invalid JSON at line 4, column 28: Expecting ',' delimiter"),
]


def broken(mutation) -> dict:
    document = copy.deepcopy(base_document())
    mutation(document)
    return document


def write(tmp_path: Path, document, name: str = "import.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document, indent=2), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mutation, expected", [c[1:] for c in DOCUMENT_ERRORS], ids=[c[0] for c in DOCUMENT_ERRORS])
def test_document_errors_name_the_path(tmp_path, mutation, expected):
    with pytest.raises(DemoImportError) as caught:
        parse_file(write(tmp_path, broken(mutation)))
    assert str(caught.value) == expected


@pytest.mark.parametrize("name, expected", [c[1:] for c in FILE_ERRORS], ids=[c[0] for c in FILE_ERRORS])
def test_file_errors_name_the_file(name, expected):
    path = FIXTURES / name
    with pytest.raises(DemoImportError) as caught:
        parse_file(path)
    assert str(caught.value) == f"{path}: {expected}"


def test_missing_file(tmp_path):
    with pytest.raises(DemoImportError) as caught:
        parse_file(tmp_path / "nope.json")
    assert (
        str(caught.value)
        == f"{tmp_path / 'nope.json'}: no such file; give the path of a JSON file with --json_file_path"
    )


@pytest.mark.parametrize("text, kind", [("[]", "a list"), ('"ENVS"', "a string"), ("null", "null"), ("3", "a number")])
def test_top_level_must_be_an_object(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(DemoImportError) as caught:
        parse_file(path)
    assert str(caught.value) == f"{path}: the top level is {kind}; expected a JSON object with ENVS and JOBS"


def test_duplicate_names_are_refused_with_their_path():
    with pytest.raises(DemoImportError) as caught:
        parse_file(FIXTURES / "duplicate_job.json")
    assert str(caught.value) == "JOBS.a: this name appears twice in the same JSON object; keep only one"


def test_duplicate_deep_inside_a_list(tmp_path):
    document = base_document()
    text = json.dumps(document).replace('"role": "admin"', '"role": "admin", "role": "viewer"')
    with pytest.raises(DemoImportError) as caught:
        parse_file(write(tmp_path, text))
    assert str(caught.value) == "USERS[0].role: this name appears twice in the same JSON object; keep only one"


@pytest.mark.parametrize("mutation, expected", [c[1:] for c in LOAD_ERRORS], ids=[c[0] for c in LOAD_ERRORS])
def test_database_dependent_errors_pass_validation(tmp_path, mutation, expected):
    parse_file(write(tmp_path, broken(mutation)))  # test_demo.py checks that loading refuses them


def test_the_base_document_is_valid(tmp_path):
    data = parse_file(write(tmp_path, base_document()))
    assert [job.name for job in data.jobs] == ["sensor_orders", "sensor_cash"]
    assert data.jobs[0].schedule.cron == "*/2 * * * *"
    assert data.notes == []


def test_original_quirks_are_kept_not_dropped():
    data = parse_file(FIXTURES / "original_style.json")
    jobs = {job.name: job for job in data.jobs}
    assert {c.key: c.value for c in data.global_config} == {
        "BROKER": "127.0.0.1:9092",
        "USE_TLS": "false",
        "UNIT_COST": "0.8",
        "BATCH_SIZE": "50",
    }
    assert jobs["fetch_weather"].package_name == "fetch_weather"
    assert [(c.environment, c.package_version) for c in jobs["fetch_weather"].contexts] == [
        ("dev", "0.1"),
        ("staging", "0.0.9"),
        ("live", "1.2.0"),
    ]
    rain = jobs["aggregate_rain"]
    assert (rain.schedule.cron, rain.schedule.enabled) == ("*/2 * * * *", False)
    summary = jobs["daily_summary"]
    assert (summary.schedule.cron, summary.schedule.timezone, summary.schedule.enabled) == (
        "15 6 * * mon-fri",
        "UTC",
        True,
    )
    assert {c.key: c.value for c in summary.config} == {"THRESHOLD": "0.25", "DRY_RUN": "true"}
    assert [c.config for c in summary.contexts if c.environment == "live"][0][0].value == "false"
    assert data.groups["nobody"] == ()
    assert data.notes == [
        "note: JOBS.aggregate_rain is a daemon (it runs continuously); its scheduled_param ('*/2 * * * *') "
        "is stored disabled and never fires"
    ]


def test_extensions_are_read(tmp_path):
    document = base_document()
    document["JOBS"]["sensor_orders"].update(
        package_name="kirby-example-hello",
        module="kirby_example_hello.main",
        enabled=False,
        notify_on=["missed"],
        scheduled_param={
            "cron": "* * * * * */10",
            "timezone": "Europe/Paris",
            "misfire_grace_seconds": 30,
            "catchup": "all",
            "overlap": "replace",
            "timeout_seconds": 60,
            "retries": 2,
        },
    )
    document["ENV_VARS"]["GLOBAL"]["TOKEN"] = {"value": 4242, "secret": True}
    data = parse_file(write(tmp_path, document))
    job = data.jobs[0]
    assert (job.package_name, job.module, job.enabled) == ("kirby-example-hello", "kirby_example_hello.main", False)
    assert (job.notify_on_failure, job.notify_on_missed) == (False, True)
    assert (job.schedule.cron, job.schedule.timezone) == ("* * * * * */10", "Europe/Paris")
    assert job.schedule.policies == {
        "misfire_grace_seconds": 30,
        "retries": 2,
        "timeout_seconds": 60,
        "catchup": CatchUp.ALL,
        "overlap": Overlap.REPLACE,
    }
    assert data.global_config[-1] == ConfigValue("TOKEN", "4242", secret=True)
    assert data.suspensions[0].starts_at.utcoffset().total_seconds() == 3600


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(base_document()).encode())
    assert len(parse_file(path).jobs) == 2


def test_deeply_nested_json_fails_cleanly(tmp_path):
    path = write(tmp_path, "[" * 100_000 + "]" * 100_000)
    with pytest.raises(DemoImportError) as caught:
        parse_file(path)
    assert str(caught.value) == f"{path}: invalid JSON: nested too deeply"


def test_a_five_megabyte_file_with_one_bad_value_at_the_end_names_it(tmp_path):
    job = base_document()["JOBS"]["sensor_orders"]
    document = {
        "ENVS": {"dev": "Development"},
        "JOBS": {f"job_{i:05d}": job for i in range(5_000_000 // 400)},
        "NOTIFICATION_GROUPS": {"sysadmins": []},
    }
    document["JOBS"]["zz_last"] = dict(job, scheduled_param={"cron": "*/5 * * * *", "second": "61"})
    path = write(tmp_path, document)
    assert path.stat().st_size >= 5_000_000
    with pytest.raises(DemoImportError) as caught:
        parse_file(path)
    assert str(caught.value) == "JOBS.zz_last.scheduled_param.second: give either cron or the separate fields, not both"


def test_a_separate_second_field_makes_a_six_field_cron(tmp_path):
    document = base_document()
    document["JOBS"]["sensor_orders"]["scheduled_param"]["second"] = "*/15"
    assert parse_file(write(tmp_path, document)).jobs[0].schedule.cron == "*/2 * * * * */15"
    document["JOBS"]["sensor_orders"]["scheduled_param"]["second"] = "61"
    with pytest.raises(DemoImportError) as caught:
        parse_file(write(tmp_path, document))
    assert str(caught.value) == "JOBS.sensor_orders.scheduled_param.second: '61' is not a valid second field"
