"""Serve the web app: waitress (a production WSGI server), or Flask's debugger with ``debug``.

The process also runs the run events consumer (``events_consumer``) so that run events reach the
script database, the notifier (``kirby.notify.notifier``) that delivers the notifications outbox,
and the daily retention of run history (``kirby.retention``); it starts serving once the consumer is
open (at most ``READY_WAIT`` s, logged), so no run starts before its events can be recorded.
waitress gets ``KIRBY_MAX_LOG_STREAMS`` threads for live-log streams (each SSE stream holds one
thread while it lasts; ``kirby.web.streams`` refuses more) plus ``RESERVED_THREADS`` that streams
can never take, so ``/schedule`` and ``/healthz`` are always served. ``X-Forwarded-*`` headers are
believed only from ``KIRBY_TRUSTED_PROXIES`` (``kirby.web.proxy``). It refuses the default
``SECRET_KEY`` unless TESTING or ``--debug``.
"""

from __future__ import annotations

import logging
import signal
import sys

from kirby.config import Settings
from kirby.errors import ConfigError
from kirby.notify.notifier import Notifier
from kirby.retention import RetentionLoop
from kirby.web.app import create_app
from kirby.web.celery_tracking import CeleryTracker
from kirby.web.events_consumer import EventsConsumer

log = logging.getLogger(__name__)
READY_WAIT = 15.0  # seconds serving waits for the run events consumer (joined, holding partitions)
RESERVED_THREADS = 16  # threads live-log streams cannot take (pages, API, /schedule, /healthz)


def check_secret_key(settings: Settings, debug: bool) -> None:
    """Refuse the development default (or an empty) ``SECRET_KEY`` outside TESTING and --debug:
    anyone knowing it could forge a session cookie and log in as any user."""
    if settings.testing or debug:
        return
    if settings.secret_key_is_default or settings.secret_key.startswith("change-me"):
        raise ConfigError(
            "SECRET_KEY is unset or the insecure default: set it to a long random string, e.g. "
            "SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), then start kirby web again"
        )


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8080, debug: bool = False, lost_grace: float = 60.0
) -> None:
    check_secret_key(settings, debug)
    app = create_app(settings)
    state = app.extensions["kirby"]
    check_provider = getattr(state.password_provider, "check", None)
    if check_provider is not None:  # a misconfigured directory stops kirby web here, naming the variable
        check_provider()
    if not settings.api_token:
        log.warning("KIRBY_API_TOKEN is not set: /schedule answers 503 until it is (the leader needs it)")
    consumer = EventsConsumer(state, grace=lost_grace, lost_check_every=min(10.0, max(1.0, lost_grace / 3)))
    state.events_consumer = consumer
    consumer.start()
    notifier = Notifier(state.settings, state.database, clock=state.clock)  # delivers the notifications outbox
    notifier.start()
    if not consumer.ready.wait(READY_WAIT):  # /schedule waits too: runs start once events can be recorded
        log.warning("the run events consumer is not ready after %.0f s; serving anyway (see /healthz)", READY_WAIT)
    retention = RetentionLoop(state.database, settings.run_retention_days)
    retention.start()
    celery = CeleryTracker(state)  # Celery task events -> run events; unreceived tasks -> expired
    celery.start()

    def stop(*_) -> None:  # stop cleanly: log streams end, consumer closed, leases released
        state.stopping.set()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    log.info(
        "kirby web on http://%s:%d/ (database %s)",
        host,
        port,
        state.database.engine.url.render_as_string(hide_password=True),
    )
    try:
        if debug:
            app.run(host=host, port=port, debug=True, use_reloader=False, threaded=True)
        else:
            from waitress import serve as waitress_serve

            waitress_serve(
                app,
                host=host,
                port=port,
                threads=settings.max_log_streams + RESERVED_THREADS,
                connection_limit=max(100, 2 * (settings.max_log_streams + RESERVED_THREADS)),
                ident="kirby",
                clear_untrusted_proxy_headers=False,  # kirby.web.proxy decides (KIRBY_TRUSTED_PROXIES)
                channel_timeout=120,
            )
    finally:
        state.stopping.set()
        consumer.stop()
        notifier.stop()
        retention.stop()
        celery.stop()
        state.close()
