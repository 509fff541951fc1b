"""`kirby audit JOB [--environment E] [--since ISO] [--until ISO] [--json]`: expected versus actual.

Exit status 1 when a slot was missed or ran twice, so monitoring can run it (see kirby.audit).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone

import click

from kirby.audit import audit
from kirby.clock import utcnow
from kirby.db import opened_database
from kirby.errors import KirbyError


def _instant(value: str | None, name: str, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise KirbyError(f"{name} {value!r} is not an ISO 8601 instant, e.g. 2026-12-01T02:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.command("audit")
@click.argument("job")
@click.option("--environment", default=None, help="The job's environment (needed when it has several).")
@click.option("--since", default=None, help="Start of the period, ISO 8601 (default: 24 hours ago; UTC if naive).")
@click.option("--until", default=None, help="End of the period, ISO 8601 (default: now).")
@click.option("--late-after", default=60.0, show_default=True, help="Seconds after its slot a start counts as late.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of a table.")
@click.pass_obj
def audit_command(settings, job, environment, since, until, late_after, as_json) -> None:
    """Every slot the schedule expects in a period, beside what happened to it."""
    now = utcnow()
    end = _instant(until, "--until", now)
    start = _instant(since, "--since", end - timedelta(hours=24))
    with opened_database(settings) as database, database.session() as session:
        result = audit(session, job, environment, start, end, now, late_after)
    if as_json:
        document = {
            "job": result.job,
            "environment": result.environment,
            "since": result.since.isoformat(),
            "until": result.until.isoformat(),
            "ok": result.ok,
            "counts": result.counts,
            "slots": [slot.as_dict() for slot in result.slots],
        }
        click.echo(json.dumps(document, indent=2))
    else:
        for slot in result.slots:
            delay = "" if slot.delay_seconds is None else f"{slot.delay_seconds:+.1f}s"
            click.echo(f"{slot.instant:%Y-%m-%dT%H:%M:%SZ}  {slot.outcome:10} {delay:>9}  {slot.run_id}  {slot.reason}")
        counts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(result.counts.items())) or "no slots"
        click.echo(f"{result.job} in {result.environment}: {counts}")
    if not result.ok:
        sys.exit(1)


COMMANDS = [audit_command]
