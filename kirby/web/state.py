"""What the web app holds: settings, the script database, and (opened on first use) bus and leases."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy.orm import scoped_session

from kirby.bus import open_bus
from kirby.bus.base import OfferBus
from kirby.clock import SYSTEM_CLOCK, Clock
from kirby.config import Settings
from kirby.db import Database
from kirby.lease import open_lease_store
from kirby.lease.base import LeaseStore
from kirby.web.streams import StreamSlots
from kirby.web.throttle import LoginThrottle


@dataclass
class WebState:
    settings: Settings
    database: Database
    _bus: OfferBus | None = None
    _lease_store: LeaseStore | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    clock: Clock = SYSTEM_CLOCK
    owns: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)  # set at shutdown: streams end
    oidc: Any = None  # the OpenID Connect client (kirby.web.oidc_login.OidcClient) when KIRBY_OIDC_ISSUER is set
    events_consumer: Any = None  # the process's EventsConsumer (``kirby web`` sets it): /healthz reports it
    # External identity (``kirby.external_users``): who checks the password form's non-local users
    # (an object with ``authenticate(username, password) -> ExternalIdentity | None``, e.g. the LDAP
    # directory), and per provider who re-checks a user's groups while its session lasts.
    password_provider: Any = None
    role_refreshers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Flask-Admin's views share one thread-local session, removed after each request.
        self.scoped = scoped_session(self.database.sessions)
        self.streams = StreamSlots(self.settings.max_log_streams, self.settings.max_log_streams_per_user)

    @property
    def bus(self) -> OfferBus:
        with self._lock:
            if self._bus is None:
                self._bus = open_bus(self.settings)
                self.owns.add("bus")
            return self._bus

    @property
    def lease_store(self) -> LeaseStore:
        with self._lock:
            if self._lease_store is None:
                self._lease_store = open_lease_store(self.settings)
                self.owns.add("lease_store")
            return self._lease_store

    def close(self) -> None:
        """Close what the app opened itself (not what the caller passed in)."""
        if "bus" in self.owns and self._bus is not None:
            self._bus.close()
        if "lease_store" in self.owns and self._lease_store is not None:
            self._lease_store.close()
        if "database" in self.owns:
            self.database.dispose()


def web_state() -> WebState:
    return current_app.extensions["kirby"]
