"""/api/openapi.json: generated from the handlers' models; every /api route is in it, every
example validates (and the request examples are accepted by the real handlers)."""

from __future__ import annotations

import json
import re

from test_web_support import TOKEN, app, settings, web  # noqa: F401

from kirby.web.rest import schemas
from kirby.web.rest.openapi import models, openapi_path

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SKIPPED_METHODS = {"HEAD", "OPTIONS"}


def document(app) -> dict:
    response = app.test_client().get("/api/openapi.json", headers=AUTH)
    assert response.status_code == 200
    return response.get_json()


def test_every_api_route_is_in_the_document_and_nothing_else(app):
    doc = document(app)
    routes = {
        (openapi_path(rule.rule)[0], method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - SKIPPED_METHODS
    }
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert routes - documented == set(), "routes missing from /api/openapi.json"
    assert documented - routes == set(), "documented operations without a route"
    assert len(routes) >= 25
    roles = {(p, m): op["x-kirby-role"] for p, item in doc["paths"].items() for m, op in item.items()}
    assert roles[("/api/jobs", "get")] == "viewer" and roles[("/api/jobs/{name}", "put")] == "admin"


def test_every_reference_resolves_and_every_example_validates(app):
    doc = document(app)
    components = doc["components"]["schemas"]
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)):
        assert ref in components, ref
    by_name = {model.__name__: model for model in models()}
    validated = 0
    for name, schema in components.items():
        for example in schema.get("examples", []):
            model = by_name.get(name) or getattr(schemas, name)
            model.model_validate(example)
            validated += 1
    assert validated >= len(by_name)
    assert components["Job"]["additionalProperties"] is False


def test_request_examples_are_accepted_by_the_handlers(app):
    client = app.test_client()
    posts = [
        ("/api/environments", schemas.Environment, 201),
        ("/api/notification-groups", schemas.NotificationGroup, 201),
        ("/api/jobs", schemas.Job, 201),
        ("/api/suspensions", schemas.Suspension, 201),
        ("/api/jobs/nightly_report/run", schemas.RunNow, 202),
    ]
    for path, model, status in posts:
        example = model.model_config["json_schema_extra"]["examples"][0]
        response = client.post(path, json=example, headers=AUTH)
        assert response.status_code == status, (path, response.get_json())
    patch = schemas.Patch.model_config["json_schema_extra"]["examples"][0]
    response = client.patch("/api/jobs/nightly_report", json=patch, headers=AUTH)
    assert response.status_code == 200 and response.get_json()["package_version"] == {"prod": "1.0.1"}
