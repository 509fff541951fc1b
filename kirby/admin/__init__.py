"""Kirby's Flask-Admin panel: ``init_admin(app, state)`` mounts every view under /admin.

One module per view group: ``jobs`` (jobs, contexts, run now), ``schedules`` (validation and
preview), ``config`` (global keys, inline keys, masking), ``catalog`` (environments, suspensions,
notification groups, exts), ``users``, ``runs`` (history), ``pages`` (home, supervisors, logs).
"""

from __future__ import annotations

import warnings

from flask import Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme
from sqlalchemy import inspect as sa_inspect

from kirby.admin.catalog import EnvironmentView, ExtView, NotificationGroupView, SuspensionView
from kirby.admin.config import GlobalConfigView
from kirby.admin.jobpage import JobPageView
from kirby.admin.jobs import ContextView, JobView
from kirby.admin.pages import HomeView, LogsView, SupervisorsView
from kirby.admin.runs import RunView
from kirby.admin.schedules import ScheduleView
from kirby.admin.users import UserView
from kirby.models import ConfigKey, Context, Environment, Ext, Job, NotificationGroup, Schedule, Suspension, User
from kirby.web.security import csp_nonce, handler_hashes
from kirby.web.state import WebState


def init_admin(app: Flask, state: WebState) -> Admin:
    with warnings.catch_warnings():
        # Flask-Admin 2.x deprecates passing a session (it wants a Flask-SQLAlchemy object, which
        # Kirby does not use: its models are plain SQLAlchemy shared with the supervisors).
        warnings.filterwarnings("ignore", "Passing a session object directly is deprecated", DeprecationWarning)
        admin = _build(app, state)
    app.config["KIRBY_ADMIN_HANDLER_HASHES"] = handler_hashes(inline_handlers(admin))
    return admin


def inline_handlers(admin: Admin) -> list[str]:
    """The inline event handlers Flask-Admin's templates render for the mounted views."""
    handlers = ["return false;", "return faHelpers.safeConfirm('Are you sure you want to delete this record?');"]
    for view in admin._views:
        handlers += [f"return modelActions.execute('{name}');" for name, _ in getattr(view, "_actions", [])]
        for inline in getattr(view, "inline_models", None) or ():
            model = getattr(inline, "model", inline)
            handlers += [
                f"faForm.addInlineField(this, '{rel.key}');"
                for rel in sa_inspect(view.model).relationships
                if rel.mapper.class_ is model
            ]
    return handlers


def _build(app: Flask, state: WebState) -> Admin:
    session = state.scoped
    admin = Admin(
        app,
        name="Kirby",
        theme=Bootstrap4Theme(base_template="kirby_admin/base.html", fluid=True),
        index_view=HomeView(name="Home", url="/admin", state=state),
        csp_nonce_generator=csp_nonce,
    )
    admin.add_view(JobView(Job, session, name="Jobs", category="Scripts", state=state))
    admin.add_view(ContextView(Context, session, name="Contexts", category="Scripts", state=state))
    admin.add_view(ScheduleView(Schedule, session, name="Schedules", category="Scripts", state=state))
    admin.add_view(SuspensionView(Suspension, session, name="Suspensions", category="Scripts", state=state))
    admin.add_view(EnvironmentView(Environment, session, name="Environments", category="Scripts", state=state))
    admin.add_view(
        GlobalConfigView(ConfigKey, session, name="Config keys", endpoint="config", category="Settings", state=state)
    )
    admin.add_view(
        NotificationGroupView(NotificationGroup, session, name="Notification groups", category="Settings", state=state)
    )
    admin.add_view(ExtView(Ext, session, name="Exts", category="Settings", state=state))
    admin.add_view(UserView(User, session, name="Users", category="Settings", state=state))
    admin.add_view(RunView(session, state=state))
    admin.add_view(LogsView(name="Logs", endpoint="logs", state=state))
    admin.add_view(SupervisorsView(name="Supervisors", endpoint="supervisors", state=state))
    admin.add_view(JobPageView(name="Job", endpoint="jobpage", state=state))
    return admin
