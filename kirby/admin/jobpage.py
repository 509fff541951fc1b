"""The page of one job: its schedules with their next fire times, contexts and versions, recent
runs, a duration chart, and the expected-versus-actual audit of a chosen period (``kirby.audit``).

URL: ``/admin/jobpage/<job name>?environment=&since=&until=`` (ISO 8601; default: the last 24 hours).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import abort, redirect, request, url_for
from flask_admin import expose
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from kirby import cron
from kirby.admin.base import KirbyBaseView
from kirby.admin.pages import local_time
from kirby.audit import audit
from kirby.errors import CronError, KirbyError
from kirby.models import Context, Job, Run
from kirby.web.charts import duration_chart

RECENT = 100


def _instant(name: str, default: datetime) -> datetime:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        abort(400, f"{name}={raw!r} is not an ISO 8601 instant, e.g. 2026-12-01T02:00:00Z")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _fires(schedule, now: datetime) -> list[datetime]:
    try:
        return cron.next_fires(schedule.cron, schedule.timezone, now, 5)
    except CronError:
        return []


class JobPageView(KirbyBaseView):
    def is_visible(self) -> bool:  # reached from the dashboard, not the menu
        return False

    @expose("/")
    def index(self):
        return redirect(url_for("admin.index"))

    @expose("/<job_name>")
    def job(self, job_name: str):  # not "name": Flask-Admin passes its own
        now = self.state.clock.now()
        until = _instant("until", now)
        since = _instant("since", until - timedelta(hours=24))
        with self.state.database.session() as s:
            job = s.scalar(
                select(Job)
                .where(Job.name == job_name)
                .options(
                    selectinload(Job.contexts).selectinload(Context.schedules),
                    selectinload(Job.contexts).selectinload(Context.environment),
                )
            )
            if job is None:
                abort(404, f"no job named {job_name!r}")
            contexts = sorted(job.contexts, key=lambda c: c.environment.name)
            environment = request.args.get("environment") or (contexts[0].environment.name if contexts else "")
            recent = list(
                s.scalars(
                    select(Run)
                    .where(Run.job_name == job_name, Run.environment == environment)
                    .order_by(Run.scheduled_at.desc())
                    .limit(RECENT)
                )
            )[::-1]
            try:
                report = audit(s, job_name, environment, since, until, now) if contexts else None
                problem = ""
            except KirbyError as exc:
                report, problem = None, str(exc)
            schedules = [(c, sch, _fires(sch, now)) for c in contexts for sch in c.schedules]
            points = [(r.id, r.duration_seconds, r.state.value) for r in recent if r.duration_seconds is not None]
            return self.render(
                "kirby_admin/job_page.html",
                job=job,
                contexts=contexts,
                environment=environment,
                schedules=schedules,
                recent=recent,
                chart=duration_chart(points),
                report=report,
                problem=problem,
                since=since,
                until=until,
                local=local_time,
            )
