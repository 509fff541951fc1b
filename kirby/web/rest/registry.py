"""The API's operations: each route is registered with its body and response models, which the
handler validates with and ``/api/openapi.json`` is generated from (``kirby.web.rest.openapi``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, request
from pydantic import BaseModel, ValidationError

from kirby.errors import KirbyError
from kirby.web.rest.schemas import Patch


@dataclass(frozen=True)
class Operation:
    rule: str  # Flask's rule, e.g. /api/jobs/<name>
    method: str
    summary: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    query: tuple[tuple[str, str, str], ...] = ()  # (name, JSON type, description)
    errors: tuple[int, ...] = field(default=(400, 401, 403, 404))

    @property
    def admin(self) -> bool:
        return self.method not in ("GET", "HEAD")


OPERATIONS: list[Operation] = []


class BadBody(KirbyError):
    """A request body that does not fit its model (``path``: where)."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


def operation(blueprint: Blueprint, rule: str, method: str, summary: str, **details) -> Callable:
    """Register the decorated view for ``method rule`` and describe it (see :class:`Operation`)."""

    def decorate(view: Callable) -> Callable:
        blueprint.add_url_rule(rule, endpoint=view.__name__, view_func=view, methods=[method])
        OPERATIONS.append(Operation(rule, method, summary, **details))
        return view

    return decorate


def describe(rule: str, method: str, summary: str, **details) -> None:
    """Describe a route registered elsewhere (``kirby.web.api``'s runs and logs)."""
    OPERATIONS.append(Operation(rule, method, summary, **details))


def _where(location: tuple) -> str:
    return ".".join(str(part) for part in location)


def validated(model: type[BaseModel], document=None) -> BaseModel:
    """The request's JSON body (or ``document``) validated by ``model``; BadBody names the first problem."""
    if document is None:
        document = request.get_json(silent=True)
        if not isinstance(document, dict):
            raise BadBody("the body must be a JSON object (Content-Type: application/json)")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        where = _where(first["loc"])
        raise BadBody(f"{where}: {message}" if where else message, where or None) from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def patched(model: type[BaseModel], current: dict) -> BaseModel:
    """``current`` with the request's merge patch applied, validated by ``model``."""
    patch = validated(Patch).root
    if "name" in patch and patch["name"] != current.get("name"):
        raise BadBody(f"name: a PATCH cannot rename {current.get('name')!r}", "name")
    return validated(model, merge_patch(current, patch))


def given(model: BaseModel) -> dict:
    """What the client sent (defaults left out), as the import format reads it."""
    return model.model_dump(exclude_unset=True)
