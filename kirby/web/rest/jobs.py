"""``/api/jobs``: jobs with their contexts, schedule and config (the import format's job body),
pause and resume, and run now with config overrides."""

from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import func, select

from kirby.demo import checks, document
from kirby.demo.export import job_spec, load_jobs
from kirby.demo.parse import parse
from kirby.demo.source import child
from kirby.demo.write import write_job
from kirby.errors import DemoImportError
from kirby.models import Environment, Job, NotificationGroup
from kirby.web.queries import parse_int
from kirby.web.rest import schemas
from kirby.web.rest.base import Conflict, blueprint
from kirby.web.rest.collection import Collection
from kirby.web.rest.registry import BadBody, given, operation, patched, validated
from kirby.web.run_now import context_for, run_now
from kirby.web.state import web_state


def job_body(job: Job) -> dict:
    """``job`` as the API returns it: the import format's body plus ``name``; no secret values."""
    spec = job_spec(job, [])
    if spec is None:  # no context yet (made in the web UI): the format has no package_version for it
        return {
            "name": job.name,
            "type": job.type.value,
            "description": job.description,
            "enabled": job.enabled,
            "package_version": {},
        }
    return {"name": job.name, **document.job(spec)}


def _find(session, name: str) -> Job | None:
    jobs = load_jobs(session, [name])
    return jobs[0] if jobs else None


JOBS = Collection(
    name="job", path="/api/jobs", key="<name>", what="job", model=Job, schema=schemas.Job, reply=job_body, find=_find
)


def save(session, name: str, body: dict) -> Job:
    """Validate ``body`` as ``JOBS.<name>`` of an import file and write the job to match it."""
    body = {key: value for key, value in body.items() if key != "name"}
    spec = parse({"ENVS": {}, "JOBS": {name: body}}).jobs[0]
    names = [c.environment for c in spec.contexts]
    environments = {e.name: e for e in session.scalars(select(Environment).where(Environment.name.in_(names)))}
    for environment in names:
        if environment not in environments:
            raise DemoImportError(
                child(child(spec.path, "environments" if spec.celery else "package_version"), environment),
                f"there is no environment {environment!r}; create it first (POST /api/environments)",
            )
    groups = {}
    if spec.notification_group is not None:
        group = session.scalar(select(NotificationGroup).where(NotificationGroup.name == spec.notification_group))
        if group is None:
            raise DemoImportError(
                child(spec.path, "notification_group"),
                f"there is no notification group {spec.notification_group!r}; create it first (POST /api/notification-groups)",
            )
        groups[group.name] = group
    job = write_job(session, spec, environments, groups)
    session.flush()
    return job


def _reply(name: str, status: int = 200):
    with web_state().database.session() as session:
        return jsonify(job_body(JOBS.one(session, name))), status


@operation(
    blueprint,
    "/api/jobs",
    "GET",
    "List jobs, by name",
    response=schemas.JobPage,
    query=(("page", "integer", "from 1"), ("per_page", "integer", "1 to 500, default 100")),
)
def list_jobs():
    page = parse_int("page", request.args.get("page"), 1, minimum=1)
    per_page = parse_int("per_page", request.args.get("per_page"), 100, minimum=1, maximum=500)
    with web_state().database.session() as session:
        names = list(
            session.scalars(select(Job.name).order_by(Job.name).offset((page - 1) * per_page).limit(per_page + 1))
        )
        jobs = load_jobs(session, names[:per_page])
        return jsonify(
            {"jobs": [job_body(j) for j in jobs], "page": page, "per_page": per_page, "has_next": len(names) > per_page}
        )


@operation(blueprint, "/api/jobs", "POST", "Create a job", body=schemas.Job, response=schemas.Job, status=201)
def create_job():
    body = given(validated(schemas.Job))
    name = body.get("name")
    if name is None:
        raise BadBody("name: required (the new job's name)", "name")
    with web_state().database.session() as session:
        if session.scalar(select(func.count()).select_from(Job).where(Job.name == name)):
            raise Conflict(f"job {name!r} exists already; PUT /api/jobs/{name} replaces it")
        save(session, name, body)
    return _reply(name, 201)


JOBS.get_view("One job")


def _name_matches(name: str, body: dict) -> None:
    if body.get("name", name) != name:
        raise BadBody(f"name: {body['name']!r} differs from the URL's {name!r}; rename by POST and DELETE", "name")


@operation(blueprint, "/api/jobs/<name>", "PUT", "Create or replace a job", body=schemas.Job, response=schemas.Job)
def put_job(name: str):
    body = given(validated(schemas.Job))
    _name_matches(name, body)
    with web_state().database.session() as session:
        existed = session.scalar(select(func.count()).select_from(Job).where(Job.name == name))
        save(session, name, body)
    return _reply(name, 200 if existed else 201)


@operation(
    blueprint,
    "/api/jobs/<name>",
    "PATCH",
    "Change some fields of a job (JSON merge patch)",
    body=schemas.Patch,
    response=schemas.Job,
)
def patch_job(name: str):
    with web_state().database.session() as session:
        save(session, name, given(patched(schemas.Job, job_body(JOBS.one(session, name)))))
    return _reply(name)


JOBS.delete_view("Delete a job (its runs stay in the history)")


def _set_enabled(name: str, enabled: bool):
    with web_state().database.session() as session:
        JOBS.one(session, name).enabled = enabled
    return _reply(name)


@operation(blueprint, "/api/jobs/<name>/pause", "POST", "Pause a job (enabled: false)", response=schemas.Job)
def pause_job(name: str):
    return _set_enabled(name, False)


@operation(blueprint, "/api/jobs/<name>/resume", "POST", "Resume a job (enabled: true)", response=schemas.Job)
def resume_job(name: str):
    return _set_enabled(name, True)


@operation(
    blueprint,
    "/api/jobs/<name>/run",
    "POST",
    "Run now, optionally with config overrides",
    body=schemas.RunNow,
    response=schemas.RunStarted,
    status=202,
)
def run_job(name: str):
    if request.is_json:
        body = validated(schemas.RunNow)
    else:  # the web UI's form (environment=...), as before
        body = validated(
            schemas.RunNow, {k: v for k, v in {"environment": request.values.get("environment")}.items() if v}
        )
    state = web_state()
    overrides = {key: checks.scalar_text(value, f"config.{key}") for key, value in body.config.items()}
    with state.database.session() as session:
        context_id = context_for(session, name, body.environment).id
    offer = run_now(state, context_id, state.clock.now(), overrides)
    return jsonify(
        {"run_id": offer.run_id, "job": offer.job, "environment": offer.environment, "config": sorted(overrides)}
    ), 202
