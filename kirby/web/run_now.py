""" "Run now": publish a manual offer (its own run id) and record the run as ``offered``."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select

from kirby.errors import KirbyError
from kirby.events import Offer
from kirby.models import Context, Job, Run
from kirby.recorder import offer_event, record
from kirby.schedule.document import manual_offer
from kirby.web.state import WebState

MASK = "********"


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


def run_now(state: WebState, context_id: int, now: datetime, overrides: dict[str, str] | None = None) -> Offer:
    """Record an ``offered`` run for ``context_id`` and publish its manual offer. Returns the offer.

    ``overrides`` replace (or add) config keys of this run only; they are recorded on the run
    (``Run.config_overrides``, JSON; the values of secret keys masked). Raises KirbyError (nothing
    published) for an unknown context or a daemon; a bus failure is recorded on the run
    (``skipped``, with the reason) and raised.
    """
    with state.database.session() as s:
        offer = manual_offer(s, context_id, now)
    if overrides:
        offer = replace(offer, config={**offer.config, **overrides})
    with state.database.session() as s:  # the row exists before any supervisor can report on it
        record(s, [offer_event("offered", offer, now)])
        if overrides:
            shown = {k: MASK if k in offer.secrets else v for k, v in sorted(overrides.items())}
            s.get(Run, offer.run_id).config_overrides = json.dumps(shown)
    try:
        state.bus.publish_offer(offer)
    except KirbyError as exc:
        with state.database.session() as s:
            record(s, [offer_event("skipped", offer, now, error=f"could not publish the offer: {exc}")])
        raise
    return offer


__all__ = ["context_for", "run_now"]
