"""Kirby and Celery: Kirby schedules Celery tasks, sends them, and tracks them.

For the Celery application (the worker), one line in its ``celery.py``::

    import kirby.celery
    kirby.celery.install(app)

``install`` makes every task of ``app`` claim its delivery in Kirby's lease store before its body
runs, so a broker redelivery of a task Kirby sent runs once (``kirby.celery.worker``). Importing
this package does not import Celery; ``install`` does. The other modules: ``task`` (what a job
sends, no Celery), ``sender`` (the supervisor's side), ``tracking`` (``kirby web``'s events
receiver).
"""

from __future__ import annotations

from typing import Any


def install(app: Any, redis_url: str | None = None) -> None:
    """Make the tasks of Celery app ``app`` run once per Kirby run id (see ``kirby.celery.worker``).

    ``redis_url``: Kirby's lease store (default: ``REDIS_URL`` of the worker's environment, else
    the embedded store of ``KIRBY_STATE_DIRECTORY``). Call it before the tasks are defined (right
    after ``app = Celery(...)``).
    """
    from kirby.celery.worker import install as _install

    _install(app, redis_url=redis_url)
