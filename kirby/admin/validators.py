"""Form validators: each refuses a bad value with the reason, so nothing is saved."""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version
from wtforms.validators import ValidationError

from kirby import cron
from kirby.errors import CronError

_PACKAGE_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def cron_expression(form, field) -> None:
    try:
        field.data = cron.validate((field.data or "").strip())
    except CronError as exc:
        raise ValidationError(str(exc)) from None


def time_zone(form, field) -> None:
    try:
        cron.zone((field.data or "").strip())
    except CronError as exc:
        raise ValidationError(str(exc)) from None
    field.data = field.data.strip()


def package_name(form, field) -> None:
    name = (field.data or "").strip()
    if not _PACKAGE_NAME.match(name):
        raise ValidationError(f"{name!r} is not a valid package name (letters, digits, '.', '_', '-'), e.g. my-script")
    field.data = name


def package_version(form, field) -> None:
    raw = (field.data or "").strip()
    try:
        Version(raw)
    except InvalidVersion:
        raise ValidationError(f"{raw!r} is not a version: pin an exact version, e.g. 1.2.0") from None
    field.data = raw


def env_key(form, field) -> None:
    key = (field.data or "").strip()
    if not _ENV_KEY.match(key):
        raise ValidationError(f"{key!r} is not an environment variable name: use letters, digits and _, e.g. API_URL")
    field.data = key
