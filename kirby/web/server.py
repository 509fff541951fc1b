"""Serve the web app: waitress (a production WSGI server), or Flask's debugger with ``debug``.

The process also runs the run events consumer (``events_consumer``) so that run events reach the
script database, and the notifier (``kirby.notify.notifier``) that delivers the notifications
outbox; it starts serving once that consumer is open (at most ``READY_WAIT`` s, logged), so no run
starts before its events can be recorded. waitress gets enough threads for many open log streams
(each SSE stream holds one thread while it lasts) and trusts ``X-Forwarded-Proto`` from a reverse
proxy on 127.0.0.1, so cookies are marked Secure behind HTTPS.
"""

from __future__ import annotations

import logging
import signal
import sys

from kirby.config import Settings
from kirby.notify.notifier import Notifier
from kirby.web.app import create_app
from kirby.web.events_consumer import EventsConsumer

log = logging.getLogger(__name__)
THREADS = 48
READY_WAIT = 15.0  # seconds serving waits for the run events consumer (joined, holding partitions)


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8080, debug: bool = False, lost_grace: float = 60.0
) -> None:
    app = create_app(settings)
    state = app.extensions["kirby"]
    if not settings.api_token:
        log.warning("KIRBY_API_TOKEN is not set: /schedule answers 503 until it is (the leader needs it)")
    consumer = EventsConsumer(state, grace=lost_grace, lost_check_every=min(10.0, max(1.0, lost_grace / 3)))
    state.events_consumer = consumer
    consumer.start()
    notifier = Notifier(state.settings, state.database, clock=state.clock)  # delivers the notifications outbox
    notifier.start()
    if not consumer.ready.wait(READY_WAIT):  # /schedule waits too: runs start once events can be recorded
        log.warning("the run events consumer is not ready after %.0f s; serving anyway (see /healthz)", READY_WAIT)

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
                threads=THREADS,
                ident="kirby",
                trusted_proxy="127.0.0.1",
                trusted_proxy_headers={"x-forwarded-proto"},
                clear_untrusted_proxy_headers=True,
                channel_timeout=120,
            )
    finally:
        state.stopping.set()
        consumer.stop()
        notifier.stop()
        state.close()
