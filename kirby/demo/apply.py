"""``kirby apply``: make the script database match an import-format file, showing the diff.

Contract: :func:`apply_data` compares the database (read as :mod:`kirby.demo.export` does) with
the validated file, both written by :mod:`kirby.demo.document`, and writes only what differs, in
the caller's session (one transaction: all or nothing; a dry run rolls it back). Applying the
same file twice changes nothing the second time. Jobs, environments, global config keys,
notification groups, exts and suspensions (identified by job and window) are created or changed;
what the database holds and the file does not is deleted only with ``prune`` (otherwise listed as
kept). Users are created when missing, never changed or deleted. Secrets the file gives as
``{"secret": true}`` keep their stored value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from kirby.config import Settings
from kirby.demo import document
from kirby.demo.export import export_data
from kirby.demo.load import require_values
from kirby.demo.source import child
from kirby.demo.spec import ConfigValue, DemoData, SuspensionSpec
from kirby.demo.write import global_keys, write_environment, write_group, write_job, write_suspension
from kirby.errors import DemoImportError, UserError
from kirby.models import ConfigKey, ConfigScope, Environment, Ext, Job, NotificationGroup, Suspension
from kirby.users import add_user, find_user


@dataclass(frozen=True)
class Change:
    action: str  # created | changed | deleted
    kind: str  # job | environment | config | group | ext | suspension | user
    name: str
    fields: tuple[str, ...] = ()  # for "changed": the keys that differ (never their values)

    def __str__(self) -> str:
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{self.action} {self.kind} {self.name}{detail}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def _resolve(values: tuple[ConfigValue, ...], stored: tuple[ConfigValue, ...]) -> tuple[ConfigValue, ...]:
    """Values with ``None`` (keep the stored secret) replaced by the stored value, when there is one."""
    known = {v.key: v.value for v in stored}
    return tuple(replace(v, value=known[v.key]) if v.value is None and v.key in known else v for v in values)


def _with_stored_secrets(data: DemoData, current: DemoData) -> DemoData:
    jobs = {spec.name: spec for spec in current.jobs}
    resolved = []
    for spec in data.jobs:
        old = jobs.get(spec.name)
        old_contexts = {c.environment: c.config for c in old.contexts} if old else {}
        contexts = tuple(
            replace(c, config=_resolve(c.config, old_contexts.get(c.environment, ()))) for c in spec.contexts
        )
        resolved.append(replace(spec, config=_resolve(spec.config, old.config if old else ()), contexts=contexts))
    stored_hooks = {(name, hook.url): hook.secret for name, hooks in current.webhooks.items() for hook in hooks}
    webhooks = {  # a webhook written without its secret keeps the stored one (secrets are write-only)
        name: tuple(replace(hook, secret=hook.secret or stored_hooks.get((name, hook.url), "")) for hook in hooks)
        for name, hooks in data.webhooks.items()
    }
    return replace(
        data,
        jobs=tuple(resolved),
        global_config=_resolve(data.global_config, current.global_config),
        webhooks=webhooks,
    )


def _differing(old: dict, new: dict) -> tuple[str, ...]:
    return tuple(key for key in dict.fromkeys([*old, *new]) if old.get(key) != new.get(key))


def _diff(kind: str, old: dict, new: dict, prune: bool, plan: Plan, compare=None) -> tuple[list, list, list]:
    """Created, changed and (when ``prune``) deleted names of one section; kept ones become notes."""
    created = [name for name in new if name not in old]
    changed = [name for name in new if name in old and old[name] != new[name]]
    gone = [name for name in old if name not in new]
    for name in created:
        plan.changes.append(Change("created", kind, name))
    for name in changed:
        fields = compare(old[name], new[name]) if compare else ()
        plan.changes.append(Change("changed", kind, name, fields))
    for name in gone:
        if prune:
            plan.changes.append(Change("deleted", kind, name))
        else:
            plan.notes.append(f"kept {kind} {name}: not in the file (--prune deletes it)")
    return created, changed, gone if prune else []


def _check_references(data: DemoData, groups: set[str]) -> None:
    for spec in data.jobs:
        if spec.notification_group is not None and spec.notification_group not in groups:
            raise DemoImportError(
                child(spec.path, "notification_group"),
                f"{spec.notification_group!r} is not defined in NOTIFICATION_GROUPS nor in the database",
            )


def apply_data(session: Session, settings: Settings, data: DemoData, prune: bool = False) -> Plan:
    """Write the difference between the database and ``data`` into ``session``; return the plan."""
    current = export_data(session)
    data = _with_stored_secrets(data, current)
    require_values(data)  # a {"secret": true} the database has no value for
    old, new = document.document(current, with_secrets=True), document.document(data, with_secrets=True)
    plan = Plan(notes=[*current.notes, *data.notes])
    undeclared = [name for name in data.used_environments() if name not in data.environments]
    for name in undeclared:  # as the import: created with its name as description, contexts disabled
        new["ENVS"][name] = old["ENVS"].get(name, name)
    envs = _diff("environment", old["ENVS"], new["ENVS"], prune, plan)
    keys = _diff("config", old["ENV_VARS"]["GLOBAL"], new["ENV_VARS"]["GLOBAL"], prune, plan)
    used_groups = {s.notification_group for s in data.jobs if s.notification_group}
    new_groups = {**{g: old["NOTIFICATION_GROUPS"][g] for g in used_groups if g in old["NOTIFICATION_GROUPS"]}}
    new_groups.update(new["NOTIFICATION_GROUPS"])
    _check_references(data, set(new_groups))
    groups = _diff("group", old["NOTIFICATION_GROUPS"], new_groups, prune, plan)
    exts = _diff("ext", dict.fromkeys(old["EXTS"]), dict.fromkeys(new["EXTS"]), prune, plan)
    jobs = _diff("job", old["JOBS"], new["JOBS"], prune, plan, compare=_differing)
    suspension = {document.suspension_key(s): s for s in new["SUSPENSIONS"]}
    old_suspension = {document.suspension_key(s): s for s in old["SUSPENSIONS"]}
    suspensions = _diff(
        "suspension",
        {_label(k): v for k, v in old_suspension.items()},
        {_label(k): v for k, v in suspension.items()},
        prune,
        plan,
    )
    users = [spec for spec in data.users if find_user(session, spec.username) is None]
    plan.changes += [Change("created", "user", spec.username) for spec in users]

    _write_environments(session, new["ENVS"], envs)
    _write_globals(session, data, keys)
    for name in groups[0] + groups[1]:
        write_group(session, name, *document.group_parts(new_groups[name]))
    session.add_all(Ext(name=name) for name in exts[0])
    _delete(session, Ext, exts[2])
    session.flush()
    _write_jobs(session, data, jobs, set(undeclared))
    _write_suspensions(session, data, suspensions)
    _delete(session, NotificationGroup, groups[2])
    _delete(session, Environment, envs[2])
    for spec in users:
        try:
            add_user(session, settings, spec.username, spec.password, spec.admin, min_length=1)  # as the import
        except UserError as exc:
            raise DemoImportError(child(spec.path, "username"), str(exc)) from None
    session.flush()
    return plan


def _label(key: tuple) -> str:
    job, starts_at, ends_at = key
    return f"{job or '(all jobs)'} {starts_at}..{ends_at}"


def _delete(session: Session, model, names: list[str]) -> None:
    if names:
        session.execute(delete(model).where(model.name.in_(names)), execution_options={"synchronize_session": False})


def _write_environments(session: Session, wanted: dict, envs) -> None:
    for name in envs[0] + envs[1]:
        write_environment(session, name, wanted[name])


def _write_globals(session: Session, data: DemoData, keys) -> None:
    rows = {row.key: row for row in global_keys(session)}
    values = {v.key: v for v in data.global_config}
    for key in keys[0] + keys[1]:
        row = rows.get(key) or ConfigKey(scope=ConfigScope.GLOBAL, key=key)
        row.value, row.secret = values[key].value, values[key].secret
        session.add(row)
    for key in keys[2]:
        session.delete(rows[key])


def _write_jobs(session: Session, data: DemoData, jobs, undeclared: set[str]) -> None:
    specs = {spec.name: spec for spec in data.jobs}
    names = jobs[0] + jobs[1]
    needed = {c.environment for n in names for c in specs[n].contexts}
    environments = {e.name: e for e in session.scalars(select(Environment).where(Environment.name.in_(needed)))}
    groups = {g.name: g for g in session.scalars(select(NotificationGroup))}
    for name in names:
        write_job(session, specs[name], environments, groups, frozenset(undeclared))
    _delete(session, Job, jobs[2])
    session.flush()


def _write_suspensions(session: Session, data: DemoData, suspensions) -> None:
    rows = {}
    for row in session.scalars(select(Suspension)):
        rows.setdefault(_label(document.suspension_key(document.suspension(_spec_of(row)))), row)
    specs = {_label(document.suspension_key(document.suspension(s))): s for s in data.suspensions}
    for label in suspensions[0] + suspensions[1]:
        write_suspension(session, specs[label], rows.get(label))
    for label in suspensions[2]:
        session.delete(rows[label])


def _spec_of(row: Suspension) -> SuspensionSpec:
    return SuspensionSpec("", row.job.name if row.job else None, row.starts_at, row.ends_at, row.reason)
