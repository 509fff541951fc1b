"""Custom pages: home, supervisors (from the lease store) and the live logs tab."""

from __future__ import annotations

from collections import defaultdict

from flask import abort, request, url_for
from flask_admin import AdminIndexView, expose
from sqlalchemy import select

from kirby import cron
from kirby.admin.base import KirbyBaseView, _Access
from kirby.models import Environment, Job
from kirby.web.dashboard import STATES, STRIP, Filters, dashboard
from kirby.web.queries import BadQuery, parse_int


def local_time(instant, zone: str) -> str:
    """``instant`` as wall-clock time in ``zone``, with the zone's abbreviation."""
    return instant.astimezone(cron.zone(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


class HomeView(_Access, AdminIndexView):
    """The job dashboard (``kirby.web.dashboard``); ``?partial=1`` returns only its rows, which the
    page's script swaps in every ``REFRESH_SECONDS``."""

    REFRESH_SECONDS = 15

    @expose("/")
    def index(self):
        args = request.args
        filters = Filters(
            state=args.get("state", "") if args.get("state", "") in STATES else "",
            environment=args.get("environment", "")[:64],
            failing=args.get("failing") == "1",
        )
        try:
            number = parse_int("page", args.get("page"), 1, minimum=1, maximum=1_000_000)
        except BadQuery as exc:
            abort(400, str(exc))
        with self.state.database.session() as s:
            page = dashboard(s, self.state.clock.now(), filters, number)
            environments = list(s.scalars(select(Environment.name).order_by(Environment.name)))
        context = {"page": page, "local": local_time, "strip": STRIP}
        if args.get("partial") == "1":
            return self.render("kirby_admin/_dashboard_rows.html", **context)

        def page_url(n: int) -> str:
            return url_for(".index", **{**args.to_dict(), "page": n})

        return self.render(
            "kirby_admin/home.html",
            filters=filters,
            states=STATES,
            environments=environments,
            refresh=self.REFRESH_SECONDS,
            page_url=page_url,
            **context,
        )


class SupervisorsView(KirbyBaseView):
    @expose("/")
    def index(self):
        store = self.state.lease_store
        daemons: dict[str, list[str]] = defaultdict(list)
        for daemon, owner in sorted(store.daemon_holders().items()):
            daemons[owner].append(daemon)
        supervisors = sorted(store.supervisors(), key=lambda s: s.name)
        return self.render(
            "kirby_admin/supervisors.html",
            supervisors=supervisors,
            leader=store.leader(),
            epoch=store.current_epoch(),
            daemons=daemons,
            now=self.state.clock.now(),
        )


class LogsView(KirbyBaseView):
    @expose("/")
    def index(self):
        with self.state.database.session() as s:
            jobs = list(s.scalars(select(Job.name).order_by(Job.name)))
        return self.render(
            "kirby_admin/logs.html", jobs=jobs, job=request.args.get("job", ""), run=request.args.get("run", "")
        )
