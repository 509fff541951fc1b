"""One home for the rules of what a user types: names, packages, versions, modules, variables,
secret values, emails, cron expressions and time zones. The import (``kirby.demo.checks``), the admin forms
(``kirby.admin.validators``) and the API use these functions and add only where the value came from.

Each function returns the value (a cron expression normalized: single spaces, aliases expanded)
or raises ``InvalidValue`` whose message names the value and says what would be valid. Values
are checked as given: a form strips what was typed before checking it.
"""

from __future__ import annotations

import re

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
