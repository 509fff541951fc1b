"""The contract tests' fixtures, each parametrized over both backends and isolated per test:
``bus_factory`` opens buses (embedded or Kafka), ``backend`` opens lease stores (embedded or Redis)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lease_support import Backend, delete_keys

from kirby.bus import OfferBus, open_bus
from kirby.config import Settings


@dataclass
class BusFactory:
    """Opens buses sharing one store (file or topics and group); closes them all at teardown.

    ``environ`` holds the variables that build ``settings``, for subprocesses (``load_settings``).
    """

    kind: str
    environ: dict[str, str]
    settings: Settings
    cwd: Path
    opened: list[OfferBus] = field(default_factory=list)

    def __call__(self) -> OfferBus:
        bus = open_bus(self.settings)
        self.opened.append(bus)
        return bus

    def close_all(self) -> None:
        for bus in reversed(self.opened):
            bus.close()


@pytest.fixture(params=["local", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus_factory(request, tmp_path: Path, make_settings) -> BusFactory:
    name = uuid.uuid4().hex[:12]
    environ = {"KIRBY_EMBEDDED_PATH": str(tmp_path / "embedded.db"), "KIRBY_SUPERVISOR_GROUP_ID": f"supervisors-{name}"}
    if request.param == "kafka":
        environ.update(
            KAFKA_BOOTSTRAP_SERVERS=request.getfixturevalue("kafka_servers"),
            KIRBY_TOPIC_JOB_OFFERS=f".kirby.test-{name}.offers",
            KIRBY_TOPIC_RUN_EVENTS=f".kirby.test-{name}.events",
        )
    factory = BusFactory(request.param, environ, make_settings(**environ), tmp_path)
    yield factory
    factory.close_all()
    if request.param == "kafka":
        from kirby.bus.kafka_topics import delete_topics

        delete_topics(factory.settings)


@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request, tmp_path: Path) -> Backend:
    """Lease stores on one shared state: an embedded file, or a key prefix of its own on Redis."""
    environ = {"KIRBY_EMBEDDED_PATH": str(tmp_path / "embedded.db")}
    prefix = ""
    if request.param == "redis":
        environ["REDIS_URL"] = request.getfixturevalue("redis_url")
        prefix = f"kirby-test:{uuid.uuid4().hex[:12]}:"
    backend = Backend(request.param, environ, tmp_path, prefix)
    yield backend
    backend.close()
    if request.param == "redis":
        delete_keys(environ["REDIS_URL"], prefix)
