"""Form validators: each refuses a bad value with the reason (``kirby.validation``'s rules), so
nothing is saved, and stores the value as the rule normalized it."""

from __future__ import annotations

import json
from collections.abc import Callable

from wtforms.validators import ValidationError

from kirby import validation
from kirby.errors import InvalidValue


def _field(rule: Callable[[object], str]):
    def check(form, field) -> None:
        try:
            field.data = rule((field.data or "").strip())
        except InvalidValue as exc:
            raise ValidationError(str(exc)) from None

    check.__name__ = rule.__name__
    return check


cron_expression = _field(validation.cron_expression)
time_zone = _field(validation.time_zone)
package_name = _field(validation.package_name)
package_version = _field(validation.package_version)
env_key = _field(validation.variable_name)
email = _field(validation.email)
job_name = _field(lambda value: validation.job_or_environment_name(value, "job name"))
environment_name = _field(lambda value: validation.job_or_environment_name(value, "environment name"))
run_user = _field(validation.run_user)
webhook_url = _field(validation.webhook_url)


def _optional(rule: Callable[[object], object]) -> Callable[[object], object]:
    return lambda value: "" if value == "" else rule(value)


def _json_text(rule: Callable[[object], object]) -> Callable[[object], str]:
    return lambda value: "" if value == "" else json.dumps(rule(value), sort_keys=True)


celery_task = _field(_optional(validation.celery_task_name))
celery_args = _field(_json_text(validation.celery_args))
celery_kwargs = _field(_json_text(validation.celery_kwargs))
celery_queue = _field(lambda value: validation.celery_route(value, "queue") or "")
celery_routing_key = _field(lambda value: validation.celery_route(value, "routing key") or "")


def unless_celery(check):
    """``check`` a context's package field, except on a Celery job's context (no package: empty)."""

    def maybe(form, field) -> None:
        job = getattr(getattr(form, "job", None), "data", None)
        if job is not None and job.celery_task and not (field.data or "").strip():
            field.data = ""
            return
        check(form, field)

    maybe.__name__ = check.__name__
    return maybe
