"""``/api/environments``, ``/api/notification-groups`` and ``/api/suspensions``: each body is
checked as its entry of an import file (``ENVS``, ``NOTIFICATION_GROUPS``, ``SUSPENSIONS``)."""

from __future__ import annotations

from flask import jsonify
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from kirby.demo.document import instant
from kirby.demo.parse import parse
from kirby.demo.write import write_environment, write_group, write_suspension
from kirby.models import Context, Environment, JobNotification, NotificationGroup, Suspension
from kirby.web.rest import schemas
from kirby.web.rest.base import Conflict, NotFound, blueprint
from kirby.web.rest.registry import BadBody, given, operation, patched, validated
from kirby.web.state import web_state

EMPTY = {"ENVS": {}, "JOBS": {}}


def _named(body: dict, name: str | None) -> str:
    """The resource's name: the URL's (a body's ``name`` must agree), else the body's (POST)."""
    if name is None:
        if not body.get("name"):
            raise BadBody("name: required", "name")
        return body["name"]
    if body.get("name", name) != name:
        raise BadBody(f"name: {body['name']!r} differs from the URL's {name!r}", "name")
    return name


def _one(session, model, name: str, what: str, listing: str):
    row = session.scalar(select(model).where(model.name == name))
    if row is None:
        raise NotFound(f"no {what} named {name!r}; GET {listing} lists them")
    return row


# -- environments ------------------------------------------------------------------------------


def _environment(row: Environment) -> dict:
    return {"name": row.name, "description": row.description}


def _save_environment(name: str | None, created: bool, body: dict | None = None):
    body = body if body is not None else given(validated(schemas.Environment))
    name = _named(body, name)
    description = parse({**EMPTY, "ENVS": {name: body.get("description", "")}}).environments[name]
    with web_state().database.session() as session:
        exists = session.scalar(select(Environment.id).where(Environment.name == name)) is not None
        if created and exists:
            raise Conflict(f"environment {name!r} exists already; PUT /api/environments/{name} changes it")
        row = write_environment(session, name, description)
        session.flush()
        return jsonify(_environment(row)), 201 if not exists else 200


@operation(blueprint, "/api/environments", "GET", "List environments", response=schemas.EnvironmentList)
def list_environments():
    with web_state().database.session() as session:
        rows = session.scalars(select(Environment).order_by(Environment.name))
        return jsonify({"environments": [_environment(r) for r in rows]})


@operation(
    blueprint,
    "/api/environments",
    "POST",
    "Create an environment",
    body=schemas.Environment,
    response=schemas.Environment,
    status=201,
)
def create_environment():
    return _save_environment(None, created=True)


@operation(blueprint, "/api/environments/<name>", "GET", "One environment", response=schemas.Environment)
def get_environment(name: str):
    with web_state().database.session() as session:
        return jsonify(_environment(_one(session, Environment, name, "environment", "/api/environments")))


@operation(
    blueprint,
    "/api/environments/<name>",
    "PUT",
    "Create or change an environment",
    body=schemas.Environment,
    response=schemas.Environment,
)
def put_environment(name: str):
    return _save_environment(name, created=False)


@operation(
    blueprint,
    "/api/environments/<name>",
    "PATCH",
    "Change an environment's description",
    body=schemas.Patch,
    response=schemas.Environment,
)
def patch_environment(name: str):
    with web_state().database.session() as session:
        current = _environment(_one(session, Environment, name, "environment", "/api/environments"))
    return _save_environment(name, False, given(patched(schemas.Environment, current)))


@operation(
    blueprint,
    "/api/environments/<name>",
    "DELETE",
    "Delete an environment no job runs in",
    status=204,
    errors=(400, 401, 403, 404, 409),
)
def delete_environment(name: str):
    with web_state().database.session() as session:
        row = _one(session, Environment, name, "environment", "/api/environments")
        jobs = sorted(c.job.name for c in session.scalars(select(Context).where(Context.environment_id == row.id)))
        if jobs:
            raise Conflict(
                f"environment {name!r} still runs jobs ({', '.join(jobs[:10])}); remove their contexts first"
            )
        session.delete(row)
    return "", 204


# -- notification groups -----------------------------------------------------------------------


def _group(row: NotificationGroup) -> dict:
    return {"name": row.name, "emails": sorted(e.email for e in row.emails)}


def _save_group(name: str | None, created: bool, body: dict | None = None):
    body = body if body is not None else given(validated(schemas.NotificationGroup))
    name = _named(body, name)
    emails = parse({**EMPTY, "NOTIFICATION_GROUPS": {name: body.get("emails", [])}}).groups[name]
    with web_state().database.session() as session:
        exists = session.scalar(select(NotificationGroup.id).where(NotificationGroup.name == name)) is not None
        if created and exists:
            raise Conflict(
                f"notification group {name!r} exists already; PUT /api/notification-groups/{name} changes it"
            )
        row = write_group(session, name, emails)
        session.flush()
        return jsonify(_group(row)), 201 if not exists else 200


@operation(
    blueprint, "/api/notification-groups", "GET", "List notification groups", response=schemas.NotificationGroupList
)
def list_groups():
    with web_state().database.session() as session:
        rows = session.scalars(
            select(NotificationGroup).options(selectinload(NotificationGroup.emails)).order_by(NotificationGroup.name)
        )
        return jsonify({"notification_groups": [_group(r) for r in rows]})


@operation(
    blueprint,
    "/api/notification-groups",
    "POST",
    "Create a notification group",
    body=schemas.NotificationGroup,
    response=schemas.NotificationGroup,
    status=201,
)
def create_group():
    return _save_group(None, created=True)


@operation(
    blueprint, "/api/notification-groups/<name>", "GET", "One notification group", response=schemas.NotificationGroup
)
def get_group(name: str):
    with web_state().database.session() as session:
        return jsonify(_group(_one(session, NotificationGroup, name, "notification group", "/api/notification-groups")))


@operation(
    blueprint,
    "/api/notification-groups/<name>",
    "PUT",
    "Create or replace a notification group",
    body=schemas.NotificationGroup,
    response=schemas.NotificationGroup,
)
def put_group(name: str):
    return _save_group(name, created=False)


@operation(
    blueprint,
    "/api/notification-groups/<name>",
    "PATCH",
    "Change a notification group (the fields given)",
    body=schemas.Patch,
    response=schemas.NotificationGroup,
)
def patch_group(name: str):
    with web_state().database.session() as session:
        current = _group(_one(session, NotificationGroup, name, "notification group", "/api/notification-groups"))
    return _save_group(name, False, given(patched(schemas.NotificationGroup, current)))


@operation(
    blueprint,
    "/api/notification-groups/<name>",
    "DELETE",
    "Delete a notification group no job uses",
    status=204,
    errors=(400, 401, 403, 404, 409),
)
def delete_group(name: str):
    with web_state().database.session() as session:
        row = _one(session, NotificationGroup, name, "notification group", "/api/notification-groups")
        jobs = sorted(
            n.job.name for n in session.scalars(select(JobNotification).where(JobNotification.group_id == row.id))
        )
        if jobs:
            raise Conflict(f"notification group {name!r} is used by jobs ({', '.join(jobs[:10])}); change them first")
        session.delete(row)
    return "", 204


# -- suspensions -------------------------------------------------------------------------------


def _suspension(row: Suspension) -> dict:
    return {
        "id": row.id,
        "job": row.job.name if row.job else None,
        "starts_at": instant(row.starts_at),
        "ends_at": instant(row.ends_at),
        "reason": row.reason,
    }


def _save_suspension(row_id: int | None, body: dict | None = None):
    body = body if body is not None else given(validated(schemas.Suspension))
    body = {k: v for k, v in body.items() if k != "id"}
    if body.get("job") is None:
        body.pop("job", None)
    spec = parse({**EMPTY, "SUSPENSIONS": [body]}).suspensions[0]
    with web_state().database.session() as session:
        row = None if row_id is None else _suspension_row(session, row_id)
        row = write_suspension(session, spec, row)
        session.flush()
        return jsonify(_suspension(row)), 201 if row_id is None else 200


def _suspension_row(session, row_id: int) -> Suspension:
    row = session.get(Suspension, row_id)
    if row is None:
        raise NotFound(f"no suspension {row_id}; GET /api/suspensions lists them")
    return row


@operation(blueprint, "/api/suspensions", "GET", "List suspensions", response=schemas.SuspensionList)
def list_suspensions():
    with web_state().database.session() as session:
        rows = session.scalars(select(Suspension).options(selectinload(Suspension.job)).order_by(Suspension.starts_at))
        return jsonify({"suspensions": [_suspension(r) for r in rows]})


@operation(
    blueprint,
    "/api/suspensions",
    "POST",
    "Create a suspension",
    body=schemas.Suspension,
    response=schemas.Suspension,
    status=201,
)
def create_suspension():
    return _save_suspension(None)


@operation(blueprint, "/api/suspensions/<int:suspension_id>", "GET", "One suspension", response=schemas.Suspension)
def get_suspension(suspension_id: int):
    with web_state().database.session() as session:
        return jsonify(_suspension(_suspension_row(session, suspension_id)))


@operation(
    blueprint,
    "/api/suspensions/<int:suspension_id>",
    "PUT",
    "Replace a suspension",
    body=schemas.Suspension,
    response=schemas.Suspension,
)
def put_suspension(suspension_id: int):
    with web_state().database.session() as session:
        _suspension_row(session, suspension_id)
    return _save_suspension(suspension_id)


@operation(
    blueprint,
    "/api/suspensions/<int:suspension_id>",
    "PATCH",
    "Change a suspension (the fields given)",
    body=schemas.Patch,
    response=schemas.Suspension,
)
def patch_suspension(suspension_id: int):
    with web_state().database.session() as session:
        current = _suspension(_suspension_row(session, suspension_id))
    return _save_suspension(suspension_id, given(patched(schemas.Suspension, current)))


@operation(blueprint, "/api/suspensions/<int:suspension_id>", "DELETE", "Delete a suspension", status=204)
def delete_suspension(suspension_id: int):
    with web_state().database.session() as session:
        session.delete(_suspension_row(session, suspension_id))
    return "", 204
