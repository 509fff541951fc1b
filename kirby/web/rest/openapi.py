"""``GET /api/openapi.json``: the OpenAPI 3.1 document, generated from the registered operations
(``kirby.web.rest.registry``) and the pydantic models their handlers validate with."""

from __future__ import annotations

import re

from flask import jsonify
from pydantic.json_schema import models_json_schema

from kirby.web.rest import schemas
from kirby.web.rest.base import blueprint
from kirby.web.rest.registry import OPERATIONS, describe, operation

_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")
_REASONS = {
    400: "Bad input",
    401: "No or refused credentials",
    403: "Needs the admin role",
    404: "Not found",
    409: "Conflict",
}

describe(
    "/api/runs",
    "GET",
    "Runs, newest first",
    response=schemas.RunPage,
    query=(
        ("job", "string", "job name"),
        ("state", "string", "run state"),
        ("supervisor", "string", "supervisor name"),
        ("since", "string", "ISO 8601 instant"),
        ("until", "string", "ISO 8601 instant"),
        ("page", "integer", "from 1"),
        ("per_page", "integer", "1 to 500, default 50"),
    ),
)
describe("/api/runs/<path:run_id>", "GET", "One run (with the keys a run now overrode)", response=schemas.Run)
describe(
    "/api/runs/<path:run_id>/logs",
    "GET",
    "A run's log lines after a sequence number",
    response=schemas.LogLines,
    query=(("after", "integer", "last seq seen, default -1"), ("limit", "integer", "1 to 10000")),
)


def openapi_path(rule: str) -> tuple[str, list[dict]]:
    """Flask's ``/api/jobs/<name>`` as ``/api/jobs/{name}``, with its path parameters."""
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "integer" if converter == "int" else "string"},
        }
        for converter, name in _CONVERTER.findall(rule)
    ]
    return _CONVERTER.sub(lambda m: "{" + m.group(2) + "}", rule), parameters


def models() -> list[type]:
    found = {schemas.Error}
    for op in OPERATIONS:
        found.update(m for m in (op.body, op.response) if m is not None)
    return sorted(found, key=lambda m: m.__name__)


def _ref(model) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(op) -> dict:
    path, parameters = openapi_path(op.rule)
    parameters += [
        {"name": n, "in": "query", "required": False, "description": d, "schema": {"type": t}} for n, t, d in op.query
    ]
    success = {"description": "OK" if op.status < 300 and op.status != 204 else "Done"}
    if op.response is not None:
        success["content"] = {"application/json": {"schema": _ref(op.response)}}
    responses = {str(op.status): success}
    for status in op.errors:
        responses[str(status)] = {
            "description": _REASONS[status],
            "content": {"application/json": {"schema": _ref(schemas.Error)}},
        }
    body = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}",
        "parameters": parameters,
        "responses": responses,
        "x-kirby-role": "admin" if op.admin else "viewer",
        "security": [{"bearer": []}, {"session": []}],
    }
    if op.body is not None:
        body["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    return body


def build_document() -> dict:
    """The OpenAPI document of every registered operation."""
    _, definitions = models_json_schema(
        [(model, "validation") for model in models()], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict] = {}
    for op in OPERATIONS:
        path, _ = openapi_path(op.rule)
        paths.setdefault(path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kirby REST API",
            "version": "1",
            "description": "Jobs, environments, notification groups and suspensions as code. Viewers may GET; "
            "writes need an admin (token from `kirby token create`, KIRBY_API_TOKEN, or a session with X-CSRFToken).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "kirby_session"},
            },
        },
    }


@operation(blueprint, "/api/openapi.json", "GET", "This OpenAPI document", errors=(401,))
def openapi_document():
    return jsonify(build_document())
