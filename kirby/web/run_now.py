""" "Run now": publish a manual offer (its own run id) and record the run as ``offered``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from kirby.errors import KirbyError
from kirby.events import Offer
from kirby.models import Context, Job
from kirby.recorder import offer_event, record
from kirby.schedule.document import manual_offer
from kirby.web.state import WebState


def context_for(session, job_name: str, environment: str | None) -> Context:
    """The context of ``job_name`` to run: the one in ``environment``, or the job's only one."""
    job = session.scalar(select(Job).where(Job.name == job_name))
    if job is None:
        raise KirbyError(f"no job named {job_name!r}: check the name in the Jobs page")
    contexts = list(job.contexts)
    if environment:
        contexts = [c for c in contexts if c.environment.name == environment]
        if not contexts:
            raise KirbyError(f"job {job_name!r} has no context in environment {environment!r}")
    if len(contexts) != 1:
        names = ", ".join(sorted(c.environment.name for c in job.contexts)) or "none"
        raise KirbyError(
            f"job {job_name!r} runs in several or no environments ({names}): say which with environment=NAME"
        )
    return contexts[0]


def run_now(state: WebState, context_id: int, now: datetime) -> Offer:
    """Record an ``offered`` run for ``context_id`` and publish its manual offer. Returns the offer.

    Raises KirbyError (nothing published) for an unknown context or a daemon; a bus failure is
    recorded on the run (``skipped``, with the reason) and raised.
    """
    with state.database.session() as s:
        offer = manual_offer(s, context_id, now)
    with state.database.session() as s:  # the row exists before any supervisor can report on it
        record(s, [offer_event("offered", offer, now)])
    try:
        state.bus.publish_offer(offer)
    except KirbyError as exc:
        with state.database.session() as s:
            record(s, [offer_event("skipped", offer, now, error=f"could not publish the offer: {exc}")])
        raise
    return offer


__all__ = ["context_for", "run_now"]
