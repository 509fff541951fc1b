"""Validating a whole import document into :class:`DemoData`, without touching the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kirby.demo import checks, jobs
from kirby.demo.source import child
from kirby.demo.spec import DemoData, SuspensionSpec, UserSpec, WebhookSpec
from kirby.errors import DemoImportError, UserError
from kirby.users import check_username
from kirby.vocabulary import JobType, Role

REQUIRED_KEYS = ("ENVS", "JOBS")
WEBHOOK_FORMATS = ("json", "slack", "teams")  # kirby.notify.webhook.FORMATS
OPTIONAL_KEYS = ("ENV_VARS", "EXTS", "USERS", "NOTIFICATION_GROUPS", "SUSPENSIONS")


def _environments(value: Any) -> dict[str, str]:
    result = {}
    for name, description in checks.obj(value, "ENVS").items():
        path = child("ENVS", name)
        checks.name(name, path, "environment", 64)
        result[name] = checks.string(description, path, 255)
    return result


def _env_vars(value: Any):
    for key in checks.obj(value, "ENV_VARS"):
        if key != "GLOBAL":
            raise DemoImportError(
                child("ENV_VARS", key),
                f"only GLOBAL is supported here; put values for one environment in JOBS.<job>.config.CONTEXT.{key}",
            )
    return jobs.config_values(value.get("GLOBAL", {}), "ENV_VARS.GLOBAL")


def _username(value: Any, path: str) -> str:
    try:
        return check_username(checks.string(value, path, 128, empty=False))
    except UserError as exc:
        raise DemoImportError(path, str(exc)) from None


def _users(value: Any) -> tuple[UserSpec, ...]:
    users = []
    for index, item in enumerate(checks.array(value, "USERS")):
        path = child("USERS", index)
        checks.keys(checks.obj(item, path), path, required=("username", "password"), optional=("role",))
        role = checks.choice(item.get("role", Role.VIEWER.value), child(path, "role"), [r.value for r in Role])
        users.append(
            UserSpec(
                path=path,
                username=_username(item["username"], child(path, "username")),
                password=checks.string(item["password"], child(path, "password"), 1024, empty=False),
                admin=role == Role.ADMIN.value,
            )
        )
    checks.unique([user.username.lower() for user in users], "USERS", "username")
    return tuple(users)


def _groups(value: Any) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[WebhookSpec, ...]]]:
    """``{name: [emails]}`` or ``{name: {"emails": [...], "webhooks": [{"url", "format", "secret"}]}}``."""
    groups, webhooks = {}, {}
    for name, body in checks.obj(value, "NOTIFICATION_GROUPS").items():
        path = child("NOTIFICATION_GROUPS", name)
        checks.string(name, path, 128, empty=False)
        emails_path = path
        if isinstance(body, dict):
            checks.keys(body, path, optional=("emails", "webhooks"))
            emails_path = child(path, "emails")
            webhooks[name] = _webhooks(body.get("webhooks", []), child(path, "webhooks"))
            body = body.get("emails", [])
        emails = checks.array(body, emails_path)
        groups[name] = tuple(checks.email(email, child(emails_path, i)) for i, email in enumerate(emails))
        checks.unique(list(groups[name]), emails_path, "email")
    return groups, webhooks


def _webhooks(value: Any, path: str) -> tuple[WebhookSpec, ...]:
    result = []
    for index, item in enumerate(checks.array(value, path)):
        where = child(path, index)
        checks.keys(checks.obj(item, where), where, required=("url",), optional=("format", "secret"))
        result.append(
            WebhookSpec(
                url=checks.webhook_url(item["url"], child(where, "url")),
                format=checks.choice(item.get("format", "json"), child(where, "format"), WEBHOOK_FORMATS),
                secret=checks.string(item.get("secret", ""), child(where, "secret"), 255),
            )
        )
    checks.unique([w.url for w in result], path, "webhook url")
    return tuple(result)


def _instant(value: Any, path: str) -> datetime:
    text = checks.string(value, path, 64, empty=False)
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise DemoImportError(
            path, f'{text!r} is not an ISO 8601 date and time, e.g. "2026-12-24T18:00:00+01:00"'
        ) from None
    if instant.tzinfo is None:
        raise DemoImportError(path, f'{text!r} has no UTC offset; add one, e.g. "{text}+00:00"')
    return instant


def _suspensions(value: Any) -> tuple[SuspensionSpec, ...]:
    result = []
    for index, item in enumerate(checks.array(value, "SUSPENSIONS")):
        path = child("SUSPENSIONS", index)
        checks.keys(checks.obj(item, path), path, required=("starts_at", "ends_at"), optional=("job", "reason"))
        starts_at = _instant(item["starts_at"], child(path, "starts_at"))
        ends_at = _instant(item["ends_at"], child(path, "ends_at"))
        if ends_at <= starts_at:
            raise DemoImportError(child(path, "ends_at"), "must be after starts_at")
        job = item.get("job")
        result.append(
            SuspensionSpec(
                path=path,
                job=None if job is None else checks.string(job, child(path, "job"), 128, empty=False),
                starts_at=starts_at,
                ends_at=ends_at,
                reason=checks.string(item.get("reason", ""), child(path, "reason")),
            )
        )
    return tuple(result)


def parse(document: dict) -> DemoData:
    """Validate a decoded document; raise DemoImportError(path, message) on the first problem."""
    checks.keys(document, "", required=REQUIRED_KEYS, optional=OPTIONAL_KEYS)
    exts = [
        checks.string(name, child("EXTS", i), empty=False)
        for i, name in enumerate(checks.array(document.get("EXTS", []), "EXTS"))
    ]
    checks.unique(exts, "EXTS", "ext")
    groups, webhooks = _groups(document.get("NOTIFICATION_GROUPS", {}))
    data = DemoData(
        environments=_environments(document["ENVS"]),
        global_config=_env_vars(document.get("ENV_VARS", {})),
        jobs=tuple(
            jobs.job(name, body, child("JOBS", name)) for name, body in checks.obj(document["JOBS"], "JOBS").items()
        ),
        exts=tuple(exts),
        users=_users(document.get("USERS", [])),
        groups=groups,
        suspensions=_suspensions(document.get("SUSPENSIONS", [])),
        webhooks=webhooks,
    )
    for job in data.jobs:
        if job.type is JobType.DAEMON and job.schedule is not None:
            data.notes.append(
                f"note: {job.path} is a daemon (it runs continuously); its scheduled_param "
                f"({job.schedule.cron!r}) is stored disabled and never fires"
            )
    return data
