"""Form validators: each refuses a bad value with the reason (``kirby.validation``'s rules), so
nothing is saved, and stores the value as the rule normalized it."""

from __future__ import annotations

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
