"""Small validators for JSON values: each returns the value it checked or raises DemoImportError(path, ...)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from kirby import validation
from kirby.demo.source import child, type_name
from kirby.errors import DemoImportError, InvalidValue


def obj(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise DemoImportError(path, f"is {type_name(value)}; expected a JSON object")
    return value


def array(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise DemoImportError(path, f"is {type_name(value)}; expected a JSON list")
    return value


def keys(mapping: dict, path: str, required: Iterable[str] = (), optional: Iterable[str] = ()) -> dict:
    """Check that ``mapping`` has every required key and no key outside required + optional."""
    required, optional = tuple(required), tuple(optional)
    for key in required:
        if key not in mapping:
            raise DemoImportError(path, f"the required key {key!r} is missing" + ("" if path else " at the top level"))
    allowed = required + optional
    for key in mapping:
        if key not in allowed:
            raise DemoImportError(child(path, key), f"unknown key; expected one of: {', '.join(allowed)}")
    return mapping


def string(value: Any, path: str, max_length: int = 255, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise DemoImportError(path, f"is {type_name(value)}; expected a string")
    if not empty and not value.strip():
        raise DemoImportError(path, "is empty; expected a non-empty string")
    if len(value) > max_length:
        raise DemoImportError(path, f"is {len(value)} characters long; at most {max_length} are allowed")
    return value


def boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise DemoImportError(path, f"is {type_name(value)}; expected true or false")
    return value


def integer(value: Any, path: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DemoImportError(path, f"is {type_name(value)}; expected a whole number")
    if value < minimum:
        raise DemoImportError(path, f"{value} is too small; expected at least {minimum}")
    return value


def choice(value: Any, path: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        shown = json.dumps(value) if not isinstance(value, (dict, list)) else type_name(value)
        raise DemoImportError(path, f"{shown} is not one of: {', '.join(allowed)}")
    return value


def _checked(rule, value: Any, path: str, *args) -> str:
    """``value`` through ``kirby.validation``'s ``rule``; its refusal names ``path``."""
    try:
        return rule(value, *args)
    except InvalidValue as exc:
        raise DemoImportError(path, str(exc)) from None


def name(value: Any, path: str, what: str, max_length: int) -> str:
    """A job or environment name (``kirby.vocabulary``'s name rule: they form run ids)."""
    string(value, path, max_length, empty=False)
    return _checked(validation.job_or_environment_name, value, path, f"{what} name")


def package_name(value: Any, path: str, hint: str = "") -> str:
    string(value, path, 128, empty=False)
    try:
        return validation.package_name(value)
    except InvalidValue as exc:
        raise DemoImportError(path, f"{exc}{hint}") from None


def version(value: Any, path: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise DemoImportError(path, f'is a number; write the version as a string, e.g. "{value}"')
    string(value, path, 64, empty=False)
    return _checked(validation.package_version, value, path)


def module(value: Any, path: str) -> str:
    string(value, path, 255, empty=False)
    return _checked(validation.module_path, value, path)


def variable(key: str, path: str) -> str:
    return _checked(validation.variable_name, key, path)


def email(value: Any, path: str) -> str:
    string(value, path, 255, empty=False)
    return _checked(validation.email, value, path)


def scalar_text(value: Any, path: str) -> str:
    """A config value as a shell sees it: strings as they are, other scalars JSON-encoded (false, 0.8, 50)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if value is None:
        raise DemoImportError(path, 'is null; use "" for an empty value or remove the key')
    raise DemoImportError(path, f"is {type_name(value)}; expected a string, number or boolean")


def secret_value(key: str, value: str, path: str) -> str:
    """A secret config value: long enough to be masked in logs."""
    return _checked(validation.secret_value, value, path, key)


def unique(values: list, path: str, what: str) -> None:
    seen: set = set()
    for index, value in enumerate(values):
        if value in seen:
            raise DemoImportError(child(path, index), f"{what} {value!r} is listed twice")
        seen.add(value)
