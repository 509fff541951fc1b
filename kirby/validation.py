"""One home for the rules of what a user types: names, packages, versions, modules, variables,
secret values, emails, cron expressions and time zones. The import (``kirby.demo.checks``), the admin forms
(``kirby.admin.validators``) and the API use these functions and add only where the value came from.

Each function returns the value (a cron expression normalized: single spaces, aliases expanded)
or raises ``InvalidValue`` whose message names the value and says what would be valid. Values
are checked as given: a form strips what was typed before checking it.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlparse

from kirby import cron
from kirby.errors import CronError, InvalidValue, PackageError
from kirby.tasks import names
from kirby.tasks.masking import short_secret_error
from kirby.vocabulary import name_problem

VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def job_or_environment_name(value: object, what: str = "name") -> str:
    """A job or environment name (they form run ids: no ``:`` or ``#``)."""
    problem = name_problem(value, what)
    if problem:
        raise InvalidValue(problem)
    return value


def package_name(value: object) -> str:
    """A PEP 508 distribution name, e.g. ``kirby-example-hello`` (returned as typed)."""
    try:
        names.check_package(value)
    except PackageError as exc:
        raise InvalidValue(str(exc)) from None
    return value


def package_version(value: object) -> str:
    """One exact PEP 440 release, e.g. ``1.2.0`` (returned as typed)."""
    try:
        names.check_version(value)
    except PackageError as exc:
        raise InvalidValue(str(exc)) from None
    return value


def module_path(value: object) -> str:
    """A Python module path run with ``python -m``, e.g. ``my_script.main``."""
    try:
        names.module_for("", value)
    except PackageError as exc:
        raise InvalidValue(str(exc)) from None
    return value


def variable_name(value: object) -> str:
    """An environment variable name, e.g. ``API_URL``."""
    if not isinstance(value, str) or not VARIABLE.match(value) or len(value) > 255:
        raise InvalidValue(f"{value!r} is not a valid environment variable name; use letters, digits and '_'")
    return value


def secret_value(value: str, key: str) -> str:
    """The value of secret config key ``key``: long enough to be masked in logs (3 characters)."""
    problem = short_secret_error(key, value)
    if problem:
        raise InvalidValue(problem)
    return value


def run_user(value: object) -> str | None:
    """A job's ``run_as``: empty (None: the supervisors' KIRBY_RUN_USER) or an unprivileged user name."""
    if not value:
        return None
    if not isinstance(value, str) or not USER.match(value) or value == "root":
        raise InvalidValue(
            f"{value!r} is not an unprivileged user name: name a system user of the supervisors' hosts, "
            "e.g. kirby-team-a, or leave it empty"
        )
    return value


def email(value: object) -> str:
    """An email address with a domain, e.g. ``ops@example.com``."""
    if not isinstance(value, str) or not EMAIL.match(value):
        raise InvalidValue(f"{value!r} is not an email address")
    return value


def cron_expression(value: object) -> str:
    """A cron expression of 5 fields or 6 (trailing seconds), normalized."""
    try:
        return cron.validate(value)
    except CronError as exc:
        raise InvalidValue(str(exc)) from None


def time_zone(value: object) -> str:
    """An IANA time zone name, e.g. ``Europe/Paris``."""
    try:
        cron.zone(value)
    except CronError as exc:
        raise InvalidValue(str(exc)) from None
    return value


def webhook_url(value: object) -> str:
    """An http(s) URL with a host, at most 1000 characters, e.g. ``https://hooks.example.com/kirby``."""
    try:
        parsed = urlparse(value) if isinstance(value, str) and len(value) <= 1000 else None
        valid = parsed is not None and parsed.scheme in ("http", "https") and bool(parsed.hostname)
        valid = valid and (parsed.port or 0) >= 0  # .port raises ValueError on a bad port
    except ValueError:
        valid = False
    if not valid:
        raise InvalidValue(f"{value!r} is not a webhook URL; use e.g. https://hooks.example.com/kirby")
    return value


CELERY_TASK_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
CELERY_ROUTE = re.compile(r"^[A-Za-z0-9_.:*#@\-]{1,255}$")


def celery_task_name(value: object) -> str:
    """A Celery task name: dotted Python identifiers, e.g. ``reports.tasks.nightly``."""
    if not isinstance(value, str) or len(value) > 255 or not CELERY_TASK_NAME.match(value):
        raise InvalidValue(f"{value!r} is not a Celery task name; use dotted Python names, e.g. reports.tasks.nightly")
    return value


def _json(value: object, what: str, kind: type, example: str):
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else kind()
        except json.JSONDecodeError as exc:
            raise InvalidValue(f"{what} is not JSON ({exc.msg} at column {exc.colno}); write e.g. {example}") from None
    if not isinstance(value, kind):
        raise InvalidValue(f"{what} must be a JSON {kind.__name__ if kind is list else 'object'}, e.g. {example}")
    return value


def celery_args(value: object) -> list:
    """A task's positional arguments: a JSON list (given as text or as a list), e.g. ``[1, "a"]``."""
    return _json(value, "the task's args", list, '[1, "a"]')


def celery_kwargs(value: object) -> dict:
    """A task's keyword arguments: a JSON object (given as text or as a dict), e.g. ``{"day": "today"}``."""
    return _json(value, "the task's kwargs", dict, '{"day": "today"}')


def celery_route(value: object, what: str = "queue") -> str | None:
    """A queue or routing key name: empty (None: the task's default) or letters, digits, ``_.:-*#@``."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not CELERY_ROUTE.match(value):
        raise InvalidValue(f"{value!r} is not a Celery {what}; use letters, digits, '_', '.', ':' and '-'")
    return value


def celery_priority(value: object) -> int | None:
    """A task priority: empty (None: the broker's default) or an integer from 0 to 255."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise InvalidValue(f"{value!r} is not a Celery priority; use an integer from 0 to 255 (or none)")
    return value
