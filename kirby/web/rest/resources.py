"""``/api/environments``, ``/api/notification-groups`` and ``/api/suspensions``: each body is
checked as its entry of an import file (``ENVS``, ``NOTIFICATION_GROUPS``, ``SUSPENSIONS``); the
routes are ``kirby.web.rest.collection``'s, configured here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import jsonify
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from kirby.demo.document import instant
from kirby.demo.parse import parse
from kirby.demo.write import write_environment, write_group, write_suspension
from kirby.models import Context, Environment, JobNotification, NotificationGroup, Suspension
from kirby.web.rest import schemas
from kirby.web.rest.base import Conflict
from kirby.web.rest.collection import Collection
from kirby.web.rest.registry import BadBody
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


def _save_named(value: Callable[[str, dict], Any], write: Callable) -> Callable:
    """The ``save`` of a collection keyed by name: ``value(name, body)`` is the body parsed as its
    import-file entry, written by ``write(session, name, value)``; 201 when created, 200 when
    changed; a POST of a name that exists is 409."""

    def save(collection: Collection, url_name: str | None, body: dict):
        name = _named(body, url_name)
        parsed = value(name, body)
        model = collection.model
        with web_state().database.session() as session:
            exists = session.scalar(select(model.id).where(model.name == name)) is not None
            if url_name is None and exists:
                raise Conflict(f"{collection.what} {name!r} exists already; PUT {collection.path}/{name} changes it")
            row = write(session, name, parsed)
            session.flush()
            return jsonify(collection.reply(row)), 201 if not exists else 200

    return save


# -- environments ------------------------------------------------------------------------------


def _environment(row: Environment) -> dict:
    return {"name": row.name, "description": row.description}


def _jobs_in_environment(session, row: Environment) -> str | None:
    jobs = sorted(c.job.name for c in session.scalars(select(Context).where(Context.environment_id == row.id)))
    if jobs:
        return f"environment {row.name!r} still runs jobs ({', '.join(jobs[:10])}); remove their contexts first"
    return None


ENVIRONMENTS = Collection(
    name="environment",
    path="/api/environments",
    key="<name>",
    what="environment",
    model=Environment,
    schema=schemas.Environment,
    reply=_environment,
    listing=lambda: select(Environment).order_by(Environment.name),
    items="environments",
    save=_save_named(
        lambda name, body: parse({**EMPTY, "ENVS": {name: body.get("description", "")}}).environments[name],
        write_environment,
    ),
)
ENVIRONMENTS.list_view("List environments", schemas.EnvironmentList)
ENVIRONMENTS.create_view("Create an environment")
ENVIRONMENTS.get_view("One environment")
ENVIRONMENTS.put_view("Create or change an environment")
ENVIRONMENTS.patch_view("Change an environment's description")
ENVIRONMENTS.delete_view("Delete an environment no job runs in", in_use=_jobs_in_environment)


# -- notification groups -----------------------------------------------------------------------


def _group(row: NotificationGroup) -> dict:
    return {"name": row.name, "emails": sorted(e.email for e in row.emails)}


def _jobs_of_group(session, row: NotificationGroup) -> str | None:
    jobs = sorted(
        n.job.name for n in session.scalars(select(JobNotification).where(JobNotification.group_id == row.id))
    )
    if jobs:
        return f"notification group {row.name!r} is used by jobs ({', '.join(jobs[:10])}); change them first"
    return None


GROUPS = Collection(
    name="group",
    path="/api/notification-groups",
    key="<name>",
    what="notification group",
    model=NotificationGroup,
    schema=schemas.NotificationGroup,
    reply=_group,
    listing=lambda: (
        select(NotificationGroup).options(selectinload(NotificationGroup.emails)).order_by(NotificationGroup.name)
    ),
    items="notification_groups",
    save=_save_named(
        lambda name, body: parse({**EMPTY, "NOTIFICATION_GROUPS": {name: body.get("emails", [])}}).groups[name],
        write_group,
    ),
)
GROUPS.list_view("List notification groups", schemas.NotificationGroupList)
GROUPS.create_view("Create a notification group")
GROUPS.get_view("One notification group")
GROUPS.put_view("Create or replace a notification group")
GROUPS.patch_view("Change a notification group (the fields given)")
GROUPS.delete_view("Delete a notification group no job uses", in_use=_jobs_of_group)


# -- suspensions -------------------------------------------------------------------------------


def _suspension(row: Suspension) -> dict:
    return {
        "id": row.id,
        "job": row.job.name if row.job else None,
        "starts_at": instant(row.starts_at),
        "ends_at": instant(row.ends_at),
        "reason": row.reason,
    }


def _save_suspension(collection: Collection, row_id: int | None, body: dict):
    body = {k: v for k, v in body.items() if k != "id"}
    if body.get("job") is None:
        body.pop("job", None)
    spec = parse({**EMPTY, "SUSPENSIONS": [body]}).suspensions[0]
    with web_state().database.session() as session:
        row = None if row_id is None else collection.one(session, row_id)
        row = write_suspension(session, spec, row)
        session.flush()
        return jsonify(_suspension(row)), 201 if row_id is None else 200


SUSPENSIONS = Collection(
    name="suspension",
    path="/api/suspensions",
    key="<int:suspension_id>",
    what="suspension",
    model=Suspension,
    schema=schemas.Suspension,
    reply=_suspension,
    listing=lambda: select(Suspension).options(selectinload(Suspension.job)).order_by(Suspension.starts_at),
    items="suspensions",
    save=_save_suspension,
)
SUSPENSIONS.list_view("List suspensions", schemas.SuspensionList)
SUSPENSIONS.create_view("Create a suspension")
SUSPENSIONS.get_view("One suspension")
SUSPENSIONS.put_view("Replace a suspension", creates=False)
SUSPENSIONS.patch_view("Change a suspension (the fields given)")
SUSPENSIONS.delete_view("Delete a suspension")
