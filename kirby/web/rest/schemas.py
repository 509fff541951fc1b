"""The REST API's JSON bodies as pydantic models: what the handlers validate with, and what
``/api/openapi.json`` is generated from.

A job, an environment, a group or a suspension has the shape of its entry in the import format
(``kirby.demo``); each field's value rule is ``kirby.validation``'s (through :func:`rule`). The
handlers then run the import's whole-document checks (``kirby.demo.parse``) on the same body, so
the API accepts exactly what the import accepts. Every model carries an example, and a test
validates each one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from kirby import validation
from kirby.cron import FallBack, SpringForward
from kirby.errors import InvalidValue
from kirby.vocabulary import CatchUp, JobType, Overlap


def rule(check, *args) -> AfterValidator:
    """``kirby.validation``'s ``check`` as a pydantic validator (its message becomes the error)."""

    def validate(value):
        try:
            return check(value, *args)
        except InvalidValue as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(validate)


JobName = Annotated[
    StrictStr, Field(min_length=1, max_length=128), rule(validation.job_or_environment_name, "job name")
]
EnvironmentName = Annotated[
    StrictStr, Field(min_length=1, max_length=64), rule(validation.job_or_environment_name, "environment name")
]
PackageName = Annotated[StrictStr, Field(max_length=128), rule(validation.package_name)]
Version = Annotated[StrictStr, Field(max_length=64), rule(validation.package_version)]
Module = Annotated[StrictStr, Field(max_length=255), rule(validation.module_path)]
Variable = Annotated[StrictStr, rule(validation.variable_name)]
Email = Annotated[StrictStr, Field(max_length=255), rule(validation.email)]
Cron = Annotated[StrictStr, Field(max_length=255), rule(validation.cron_expression)]
Zone = Annotated[StrictStr, Field(max_length=64), rule(validation.time_zone)]
Scalar = StrictStr | StrictInt | StrictFloat | StrictBool
Count = Annotated[StrictInt, Field(ge=0)]
Instant = Annotated[StrictStr, Field(json_schema_extra={"format": "date-time"})]


def _model(example: dict, extra: str = "forbid") -> ConfigDict:
    return ConfigDict(extra=extra, json_schema_extra={"examples": [example]})


class SecretValue(BaseModel):
    """A config value; ``{"secret": true}`` without ``value`` keeps the stored secret (reads show only that)."""

    model_config = _model({"value": "s3cr3t", "secret": True})
    value: Scalar | None = None
    secret: StrictBool = False


ConfigMap = dict[Variable, Scalar | SecretValue]


class JobConfig(BaseModel):
    """Config keys at job scope (``JOB``) and per environment (``CONTEXT``); context over job over global."""

    model_config = _model({"JOB": {"API_URL": "https://api.example"}, "CONTEXT": {"prod": {"TOKEN": {"secret": True}}}})
    JOB: ConfigMap = {}
    CONTEXT: dict[EnvironmentName, ConfigMap] = {}


class ScheduleParam(BaseModel):
    """When a scheduled job runs (``cron``, or the original's separate fields) and its policies."""

    model_config = _model({"cron": "0 3 * * *", "timezone": "Europe/Paris", "catchup": "latest", "retries": 1})
    name: StrictStr = ""
    cron: Cron | None = None
    minute: StrictStr | StrictInt | None = None
    hour: StrictStr | StrictInt | None = None
    day: StrictStr | StrictInt | None = None
    month: StrictStr | StrictInt | None = None
    weekday: StrictStr | StrictInt | None = None
    second: StrictStr | StrictInt | None = None
    timezone: Zone = "UTC"
    misfire_grace_seconds: Count | None = None
    catchup: Literal[tuple(c.value for c in CatchUp)] | None = None  # type: ignore[valid-type]
    overlap: Literal[tuple(o.value for o in Overlap)] | None = None  # type: ignore[valid-type]
    timeout_seconds: Annotated[StrictInt, Field(ge=1)] | None = None
    retries: Count | None = None
    dst_fall_back: Literal[tuple(f.value for f in FallBack)] | None = None  # type: ignore[valid-type]
    dst_spring_forward: Literal[tuple(f.value for f in SpringForward)] | None = None  # type: ignore[valid-type]


JOB_EXAMPLE = {
    "name": "nightly_report",
    "type": "scheduled",
    "description": "Builds the nightly report",
    "enabled": True,
    "package_name": "kirby-example-hello",
    "package_version": {"prod": "1.0.0"},
    "scheduled_param": {"cron": "0 3 * * *", "timezone": "Europe/Paris"},
    "config": {
        "JOB": {"GREETING": "bonjour"},
        "CONTEXT": {"prod": {"API_KEY": {"value": "k-0123456789", "secret": True}}},
    },
}


CeleryTaskName = Annotated[StrictStr, Field(max_length=255), rule(validation.celery_task_name)]
Route = Annotated[StrictStr, Field(max_length=255), rule(validation.celery_route)]


class CeleryTask(BaseModel):
    """The Celery task a Celery job sends (instead of running a package)."""

    model_config = _model({"name": "reports.tasks.nightly", "args": [1], "kwargs": {"day": "today"}})
    name: CeleryTaskName
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    queue: Route | None = None
    routing_key: Route | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=255)] | None = None


class Job(BaseModel):
    """A job with its contexts (``package_version``: environment -> pinned version), schedule and config.

    The body of ``JOBS.<name>`` in the import format, plus ``name`` (required by POST; PUT takes it
    from the URL). Reads never return secret values. A Celery job gives ``celery_task`` and
    ``environments`` instead of ``package_version``, ``package_name`` and ``module``.
    """

    model_config = _model(JOB_EXAMPLE)
    name: JobName | None = None
    type: Literal[tuple(t.value for t in JobType)]  # type: ignore[valid-type]
    package_version: Annotated[dict[EnvironmentName, Version], Field(min_length=1)] | None = None
    celery_task: CeleryTask | None = None
    environments: Annotated[list[EnvironmentName], Field(min_length=1)] | None = None
    description: Annotated[StrictStr, Field(max_length=10_000)] = ""
    enabled: StrictBool = True
    package_name: PackageName | None = None
    module: Module | None = None
    scheduled_param: ScheduleParam | None = None
    config: JobConfig | None = None
    notification_group: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    notify_on: list[Literal["failure", "missed"]] | None = None


class JobPage(BaseModel):
    model_config = _model({"jobs": [JOB_EXAMPLE], "page": 1, "per_page": 100, "has_next": False})
    jobs: list[Job]
    page: int
    per_page: int
    has_next: bool


class Environment(BaseModel):
    model_config = _model({"name": "prod", "description": "Production"})
    name: EnvironmentName | None = None
    description: Annotated[StrictStr, Field(max_length=255)] = ""


class EnvironmentList(BaseModel):
    model_config = _model({"environments": [{"name": "prod", "description": "Production"}]})
    environments: list[Environment]


class NotificationGroup(BaseModel):
    model_config = _model({"name": "ops", "emails": ["ops@example.com"]})
    name: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    emails: list[Email] = []


class NotificationGroupList(BaseModel):
    model_config = _model({"notification_groups": [{"name": "ops", "emails": ["ops@example.com"]}]})
    notification_groups: list[NotificationGroup]


SUSPENSION_EXAMPLE = {
    "job": "nightly_report",
    "starts_at": "2026-12-24T18:00:00+01:00",
    "ends_at": "2026-12-26T08:00:00+01:00",
    "reason": "Christmas freeze",
}


class Suspension(BaseModel):
    """A pause window ``[starts_at, ends_at)`` (ISO 8601 with a UTC offset) of one job, or of all jobs."""

    model_config = _model(SUSPENSION_EXAMPLE)
    id: StrictInt | None = Field(default=None, description="Read-only: given by the server.")
    job: JobName | None = None
    starts_at: Instant
    ends_at: Instant
    reason: Annotated[StrictStr, Field(max_length=255)] = ""


class SuspensionList(BaseModel):
    model_config = _model({"suspensions": [{"id": 1, **SUSPENSION_EXAMPLE}]})
    suspensions: list[Suspension]


class RunNow(BaseModel):
    """Run now: in ``environment`` (needed when the job has several), with ``config`` overriding keys."""

    model_config = _model({"environment": "prod", "config": {"DRY_RUN": "true"}})
    environment: EnvironmentName | None = None
    config: dict[Variable, Scalar] = {}


class RunStarted(BaseModel):
    model_config = _model(
        {
            "run_id": "nightly_report:prod:manual-0f3c",
            "job": "nightly_report",
            "environment": "prod",
            "config": ["DRY_RUN"],
        }
    )
    run_id: str
    job: str
    environment: str
    config: list[str] = Field(description="The overridden keys (recorded on the run, secret values masked).")


class Run(BaseModel):
    """One attempt of a run (``GET /api/runs/<id>``)."""

    model_config = _model(
        {"id": "hello:prod:20260102T030000Z", "job": "hello", "environment": "prod", "state": "succeeded"},
        extra="allow",
    )
    id: str
    job: str
    environment: str
    state: str


class RunPage(BaseModel):
    model_config = _model(
        {
            "runs": [{"id": "hello:prod:20260102T030000Z", "job": "hello", "environment": "prod", "state": "failed"}],
            "page": 1,
            "per_page": 50,
            "has_next": False,
        }
    )
    runs: list[Run]
    page: int
    per_page: int
    has_next: bool


class LogLines(BaseModel):
    model_config = _model(
        {"run_id": "hello:prod:20260102T030000Z", "lines": [{"seq": 0, "stream": "stdout", "text": "hello"}]}
    )
    run_id: str
    lines: list[dict]


class Patch(RootModel[dict[str, Any]]):
    """A JSON merge patch (RFC 7386): the keys given replace the resource's, null removes one; the
    result is validated as a whole (a Job, an Environment...)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"enabled": False, "package_version": {"prod": "1.0.1"}}]}
    )


class Error(BaseModel):
    """Any refusal: one line naming the input and the fix (``path``: the import-format path, when there is one)."""

    model_config = _model(
        {"error": "JOBS.nightly_report.scheduled_param.cron: '61 * * * *' is not a valid cron expression"}
    )
    error: str
    path: str | None = None
