"""Validated data back to the import format: :class:`DemoData` -> the JSON document ``parse`` reads.

One serializer for ``kirby export``, ``kirby apply``'s diff and the REST API, so what is compared,
written and returned has one shape: every policy of a schedule spelled out, cron as one
expression, instants in UTC, groups' emails and exts sorted. Secret values are written only when
``with_secrets``; otherwise a secret is ``{"secret": true}`` (which ``kirby apply`` reads as "keep
the stored value"). ``USERS`` is never written (passwords are stored hashed).
"""

from __future__ import annotations

from datetime import timezone

from kirby.demo.load import POLICY_COLUMNS as POLICIES
from kirby.demo.spec import NOTIFY_FLAGS, ConfigValue, DemoData, JobSpec, ScheduleSpec, SuspensionSpec
from kirby.models import Schedule


def policy_defaults() -> dict:
    """The model's default of every schedule policy (what a file that omits one gets)."""
    columns = Schedule.__table__.c
    return {key: columns[key].default.arg if columns[key].default is not None else None for key in POLICIES}


def _plain(value):
    return getattr(value, "value", value)  # enums as their values


def config(values: tuple[ConfigValue, ...], with_secrets: bool) -> dict:
    result = {}
    for item in values:
        if not item.secret:
            result[item.key] = item.value
        elif with_secrets and item.value is not None:
            result[item.key] = {"value": item.value, "secret": True}
        else:
            result[item.key] = {"secret": True}
    return result


def schedule(spec: ScheduleSpec) -> dict:
    policies = {**policy_defaults(), **spec.policies}
    return {"name": spec.name, "cron": spec.cron, "timezone": spec.timezone} | {
        key: _plain(policies[key]) for key in POLICIES
    }


def job(spec: JobSpec, with_secrets: bool = False) -> dict:
    """The body of ``JOBS.<name>`` (the REST API adds ``name``)."""
    body = {"type": spec.type.value, "description": spec.description, "enabled": spec.enabled}
    if spec.celery is not None:
        body["celery_task"] = spec.celery.to_dict()
        body["environments"] = [c.environment for c in spec.contexts]
    else:
        body["package_name"] = spec.package_name
        body["package_version"] = {c.environment: c.package_version for c in spec.contexts}
    if spec.module:
        body["module"] = spec.module
    if spec.schedule is not None:
        body["scheduled_param"] = schedule(spec.schedule)
    body["config"] = {
        "JOB": config(spec.config, with_secrets),
        "CONTEXT": {c.environment: config(c.config, with_secrets) for c in spec.contexts},
    }
    if spec.notification_group is not None:
        body["notification_group"] = spec.notification_group
        body["notify_on"] = [word for word, attribute, _ in NOTIFY_FLAGS if getattr(spec, attribute)]
    return body


def instant(value) -> str:
    return value.astimezone(timezone.utc).isoformat()


def suspension(spec: SuspensionSpec) -> dict:
    body = {"starts_at": instant(spec.starts_at), "ends_at": instant(spec.ends_at), "reason": spec.reason}
    return ({"job": spec.job} if spec.job is not None else {}) | body


def document(data: DemoData, with_secrets: bool = False) -> dict:
    """The whole import document of ``data`` (``USERS`` left out)."""
    return {
        "ENVS": dict(data.environments),
        "ENV_VARS": {"GLOBAL": config(data.global_config, with_secrets)},
        "JOBS": {spec.name: job(spec, with_secrets) for spec in data.jobs},
        "EXTS": sorted(data.exts),
        "NOTIFICATION_GROUPS": {
            name: group(emails, data.webhooks.get(name, ()), with_secrets)
            for name, emails in sorted(data.groups.items())
        },
        "SUSPENSIONS": sorted((suspension(s) for s in data.suspensions), key=suspension_key),
    }


def group(emails, webhooks, with_secrets: bool = False) -> list | dict:
    """A notification group's body: its sorted emails, or (with webhooks) ``{"emails", "webhooks"}``;
    a webhook's secret only ``with_secrets`` (without it, applying the file keeps the stored one)."""
    if not webhooks:
        return sorted(emails)
    hooks = [
        {"url": w.url, "format": w.format, **({"secret": w.secret} if with_secrets and w.secret else {})}
        for w in sorted(webhooks, key=lambda w: w.url)
    ]
    return {"emails": sorted(emails), "webhooks": hooks}


def group_parts(body: list | dict) -> tuple[tuple[str, ...], list[dict]]:
    """(emails, webhooks) of a group body written by ``group``."""
    if isinstance(body, dict):
        return tuple(body.get("emails", ())), list(body.get("webhooks", ()))
    return tuple(body), []


def suspension_key(body: dict) -> tuple:
    """A suspension's identity (it has no name): its job and its window."""
    return (body.get("job") or "", body["starts_at"], body["ends_at"])
