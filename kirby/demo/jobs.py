"""Validating one entry of ``JOBS`` into a :class:`JobSpec` (see the package docstring for the format)."""

from __future__ import annotations

from typing import Any

from kirby import cron, validation
from kirby.celery.task import CeleryTask
from kirby.cron import FallBack, SpringForward
from kirby.demo import checks
from kirby.demo.source import child
from kirby.demo.spec import ConfigValue, ContextSpec, JobSpec, ScheduleSpec
from kirby.errors import CronError, DemoImportError, InvalidValue
from kirby.vocabulary import MIN_MISFIRE_GRACE_REASON, MIN_MISFIRE_GRACE_SECONDS, CatchUp, JobType, Overlap

JOB_KEYS = (
    "description",
    "notification_group",
    "scheduled_param",
    "config",
    "package_name",
    "module",
    "enabled",
    "notify_on",
)
CELERY_JOB_KEYS = ("description", "notification_group", "scheduled_param", "config", "enabled", "notify_on")
CELERY_TASK_KEYS = ("args", "kwargs", "queue", "routing_key", "priority")
CRON_FIELDS = ("minute", "hour", "day", "month", "weekday", "second")
POLICY_KEYS = (
    "timezone",
    "misfire_grace_seconds",
    "catchup",
    "overlap",
    "timeout_seconds",
    "retries",
    "dst_fall_back",
    "dst_spring_forward",
)
NOTIFY_ON = ("failure", "missed", "lost", "recovery", "daemon", "suspended")  # kirby.notify.events
DEFAULT_NOTIFY_ON = ("failure", "missed", "lost", "recovery", "daemon")


def config_values(value: Any, path: str) -> tuple[ConfigValue, ...]:
    """``{KEY: value}`` where value is a scalar or ``{"value": ..., "secret": true}``.

    ``{"secret": true}`` alone means "the value stored already" (an export without secrets)."""
    result = []
    for key, item in checks.obj(value, path).items():
        where = child(path, key)
        checks.variable(key, where)
        if isinstance(item, dict):
            if "value" not in item and item.get("secret") is not True:
                raise DemoImportError(
                    where, 'is an object; expected a string, number, boolean or {"value": ..., "secret": true}'
                )
            checks.keys(item, where, optional=("value", "secret"))
            secret = checks.boolean(item.get("secret", False), child(where, "secret"))
            text = checks.scalar_text(item["value"], child(where, "value")) if "value" in item else None
            if secret and text is not None:
                checks.secret_value(key, text, child(where, "value"))
            result.append(ConfigValue(key, text, secret, where))  # None: keep the stored secret
        else:
            result.append(ConfigValue(key, checks.scalar_text(item, where), path=where))
    return tuple(result)


def _cron(param: dict, path: str) -> str:
    fields = [key for key in CRON_FIELDS if key in param]
    if "cron" in param:
        if fields:
            raise DemoImportError(child(path, fields[0]), "give either cron or the separate fields, not both")
        expression = checks.string(param["cron"], child(path, "cron"), empty=False)
        try:
            return cron.validate(expression)
        except CronError as exc:
            raise DemoImportError(child(path, "cron"), str(exc)) from None
    if not fields:
        raise DemoImportError(path, 'no time given; set cron (e.g. "*/5 * * * *") or minute, hour, ...')
    values = {}
    for key in fields:
        item = param[key]
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        values[key] = checks.string(item, child(path, key), empty=False)
    try:
        return cron.from_fields(**{key: values.get(key, "*") for key in CRON_FIELDS[:5]}, second=values.get("second"))
    except cron.CronFieldError as exc:
        where = child(path, exc.field) if exc.field in values else path
        raise DemoImportError(where, f"{exc.value!r} is not a valid {exc.field} field") from None
    except CronError as exc:
        raise DemoImportError(path, str(exc)) from None


def schedule(value: Any, path: str, job_type: JobType) -> ScheduleSpec:
    param = checks.keys(checks.obj(value, path), path, optional=("name", "cron") + CRON_FIELDS + POLICY_KEYS)
    expression = _cron(param, path)
    if len(expression) > 255:
        raise DemoImportError(
            path, f"the cron expression is {len(expression)} characters long; at most 255 are allowed"
        )
    timezone = checks.string(param.get("timezone", "UTC"), child(path, "timezone"), 64, empty=False)
    try:
        cron.zone(timezone)
    except CronError:
        raise DemoImportError(
            child(path, "timezone"), f'{timezone!r} is not an IANA time zone, e.g. "Europe/Paris"'
        ) from None
    policies: dict[str, Any] = {}
    if "retries" in param:
        policies["retries"] = checks.integer(param["retries"], child(path, "retries"), minimum=0)
    if "misfire_grace_seconds" in param:
        grace = checks.integer(param["misfire_grace_seconds"], child(path, "misfire_grace_seconds"), minimum=0)
        if grace < MIN_MISFIRE_GRACE_SECONDS:
            raise DemoImportError(
                child(path, "misfire_grace_seconds"),
                f"{grace} is too small; expected at least {MIN_MISFIRE_GRACE_SECONDS}: {MIN_MISFIRE_GRACE_REASON}",
            )
        policies["misfire_grace_seconds"] = grace
    if param.get("timeout_seconds") is not None:
        policies["timeout_seconds"] = checks.integer(
            param["timeout_seconds"], child(path, "timeout_seconds"), minimum=1
        )
    if "catchup" in param:
        policies["catchup"] = CatchUp(
            checks.choice(param["catchup"], child(path, "catchup"), [c.value for c in CatchUp])
        )
    if "overlap" in param:
        policies["overlap"] = Overlap(
            checks.choice(param["overlap"], child(path, "overlap"), [o.value for o in Overlap])
        )
    for key, kind in (("dst_fall_back", FallBack), ("dst_spring_forward", SpringForward)):
        if key in param:
            policies[key] = kind(checks.choice(param[key], child(path, key), [k.value for k in kind]))
    return ScheduleSpec(
        name=checks.string(param.get("name", ""), child(path, "name")),
        cron=expression,
        timezone=timezone,
        enabled=job_type is JobType.SCHEDULED,  # a daemon's schedule is kept, disabled
        policies=policies,
    )


def celery_task(value: Any, path: str) -> CeleryTask:
    """``celery_task``: ``{"name", "args", "kwargs", "queue", "routing_key", "priority"}`` (name required)."""
    body = checks.keys(checks.obj(value, path), path, required=("name",), optional=CELERY_TASK_KEYS)
    rules = (
        ("name", validation.celery_task_name),
        ("args", validation.celery_args),
        ("kwargs", validation.celery_kwargs),
        ("queue", lambda v: validation.celery_route(v, "queue")),
        ("routing_key", lambda v: validation.celery_route(v, "routing key")),
        ("priority", validation.celery_priority),
    )
    values = {}
    for key, rule in rules:
        if key in body:
            if key in ("args", "kwargs") and isinstance(body[key], str):
                raise DemoImportError(child(path, key), f"is a string; write the JSON {key} itself, not text")
            try:
                values[key] = rule(body[key])
            except InvalidValue as exc:
                raise DemoImportError(child(path, key), str(exc)) from None
    return CeleryTask(**values)


def _celery_environments(value: Any, path: str) -> dict[str, str]:
    """``environments``: the environments a Celery job runs in (one context each, no version)."""
    names = checks.array(value, path)
    if not names:
        raise DemoImportError(path, 'is empty; name at least one environment, e.g. ["production"]')
    checks.unique(names, path, "environment")
    return {checks.name(n, child(path, i), "environment", 64): "" for i, n in enumerate(names)}


def _contexts(versions: Any, config: dict, path: str, celery: bool = False) -> tuple[ContextSpec, ...]:
    versions_path = child(path, "environments" if celery else "package_version")
    versions = versions if celery else checks.obj(versions, versions_path)
    if not versions:
        raise DemoImportError(
            versions_path, 'is empty; give the version to run in at least one environment, e.g. {"dev": "1.0.0"}'
        )
    context_path = child(child(path, "config"), "CONTEXT")
    context_config = checks.obj(config.get("CONTEXT", {}), context_path)
    for environment, values in context_config.items():
        if environment not in versions and checks.obj(values, child(context_path, environment)):
            raise DemoImportError(
                child(context_path, environment),
                f"the job does not run in {environment!r} (no package_version.{environment}); add a version or remove these keys"
                if not celery
                else f"the job does not run in {environment!r} (not in environments); add it or remove these keys",
            )
    return tuple(
        ContextSpec(
            environment=checks.name(environment, child(versions_path, environment), "environment", 64),
            package_version="" if celery else checks.version(version, child(versions_path, environment)),
            config=config_values(context_config.get(environment, {}), child(context_path, environment)),
        )
        for environment, version in versions.items()
    )


def _notify_on(value: Any, path: str) -> tuple[str, ...]:
    items = checks.array(value, path)
    for index, item in enumerate(items):
        checks.choice(item, child(path, index), NOTIFY_ON)
    checks.unique(items, path, "notify_on value")
    return tuple(items)


def job(name: str, value: Any, path: str) -> JobSpec:
    """Validate ``JOBS.<name>``. Notification group existence is checked when loading."""
    checks.name(name, path, "job", 128)
    body = checks.obj(value, path)
    celery = None
    if "celery_task" in body:
        body = checks.keys(body, path, required=("type", "celery_task", "environments"), optional=CELERY_JOB_KEYS)
        celery = celery_task(body["celery_task"], child(path, "celery_task"))
        if body["type"] != JobType.SCHEDULED.value:
            raise DemoImportError(child(path, "type"), "a Celery task job is scheduled; use type scheduled")
    else:
        body = checks.keys(body, path, required=("type", "package_version"), optional=JOB_KEYS)
    job_type = JobType(checks.choice(body["type"], child(path, "type"), [t.value for t in JobType]))
    config = checks.keys(
        checks.obj(body.get("config", {}), child(path, "config")), child(path, "config"), optional=("JOB", "CONTEXT")
    )
    if celery is not None:
        package = ""
    elif "package_name" in body:
        package = checks.package_name(body["package_name"], child(path, "package_name"))
    else:
        package = checks.package_name(name, path, "; the job name is the package name unless you set package_name")
    group = body.get("notification_group")
    if group is not None:
        group = checks.string(group, child(path, "notification_group"), 128, empty=False)
    notify = DEFAULT_NOTIFY_ON
    if "notify_on" in body:
        if group is None:
            raise DemoImportError(child(path, "notify_on"), "needs a notification_group to notify")
        notify = _notify_on(body["notify_on"], child(path, "notify_on"))
    if "scheduled_param" in body:
        spec = schedule(body["scheduled_param"], child(path, "scheduled_param"), job_type)
    elif job_type is JobType.SCHEDULED:
        raise DemoImportError(path, "a scheduled job needs scheduled_param (when to run it)")
    else:
        spec = None
    return JobSpec(
        path=path,
        name=name,
        description=checks.string(body.get("description", ""), child(path, "description"), 10_000),
        type=job_type,
        enabled=checks.boolean(body.get("enabled", True), child(path, "enabled")),
        package_name=package,
        module=checks.module(body["module"], child(path, "module")) if "module" in body else "",
        contexts=(
            _contexts(_celery_environments(body["environments"], child(path, "environments")), config, path, True)
            if celery is not None
            else _contexts(body["package_version"], config, path)
        ),
        schedule=spec,
        config=config_values(config.get("JOB", {}), child(child(path, "config"), "JOB")),
        notification_group=group,
        **{f"notify_on_{name}": name in notify for name in NOTIFY_ON},
        celery=celery,
    )
