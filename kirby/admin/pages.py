"""Custom pages: home, supervisors (from the lease store) and the live logs tab."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

from flask import request
from flask_admin import AdminIndexView, expose
from sqlalchemy import func, select

from kirby.admin.base import KirbyBaseView, _Access
from kirby.models import Job, Run, RunState


class HomeView(_Access, AdminIndexView):
    @expose("/")
    def index(self):
        from kirby.web.state import web_state

        since = datetime.now(timezone.utc) - timedelta(hours=24)
        with web_state().database.session() as s:
            jobs = s.scalar(select(func.count()).select_from(Job))
            by_state = dict(
                s.execute(select(Run.state, func.count()).where(Run.scheduled_at >= since).group_by(Run.state)).all()
            )
        counts = [(state.value, by_state.get(state, 0)) for state in RunState]
        return self.render("kirby_admin/home.html", jobs=jobs, counts=counts)


class SupervisorsView(KirbyBaseView):
    @expose("/")
    def index(self):
        from kirby.web.state import web_state

        store = web_state().lease_store
        daemons: dict[str, list[str]] = defaultdict(list)
        for name, holder in sorted(store.lease_holders("daemon").items()):  # owner: <supervisor>@<instance>
            daemons[holder.owner.partition("@")[0]].append(name.partition(":")[2])
        supervisors = sorted(store.supervisors(), key=lambda s: s.name)
        return self.render(
            "kirby_admin/supervisors.html",
            supervisors=supervisors,
            leader=store.leader(),
            epoch=store.current_epoch(),
            daemons=daemons,
            now=datetime.now(timezone.utc),
        )


class LogsView(KirbyBaseView):
    @expose("/")
    def index(self):
        from kirby.web.state import web_state

        with web_state().database.session() as s:
            jobs = list(s.scalars(select(Job.name).order_by(Job.name)))
        return self.render(
            "kirby_admin/logs.html", jobs=jobs, job=request.args.get("job", ""), run=request.args.get("run", "")
        )
