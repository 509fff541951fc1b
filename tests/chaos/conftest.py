"""Chaos harness: a real `kirby web` and three `kirby supervisor`s (the e2e ``Cluster``) on Kafka and
Redis servers of the test's own, which the tests stop, freeze, restart and restart empty."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest

from tests.e2e.conftest import Cluster, cluster_env, free_port, open_cluster
from tests.integration.conftest import example_index, example_wheels, shared_venvs  # noqa: F401 (fixtures)
from tests.private_services import PrivateKafka, PrivateRedis


@dataclass
class Chaos:
    cluster: Cluster
    redis: PrivateRedis | None
    kafka: PrivateKafka | None


@pytest.fixture
def chaos(request, tmp_path, example_index, shared_venvs, start_private_redis):  # noqa: F811 (fixtures)
    """``chaos(kafka="shared"|"private"|None, redis_options=(...))`` builds the cluster (not started);
    ``kafka=None`` runs it on the embedded backends (no Redis either)."""
    made: list[Chaos] = []

    def build(kafka: str = "shared", redis_options: tuple[str, ...] = ()) -> Chaos:
        if not shutil.which("redis-server"):
            pytest.fail("redis-server is not installed: run `deploy/services up redis`")
        private = redis = address = None
        if kafka is not None:
            redis = start_private_redis(*redis_options)
        if kafka == "private":
            private = PrivateKafka(tmp_path / "services")
            private("up")
            address = private.address
        elif kafka == "shared":
            address = request.getfixturevalue("kafka_servers")
        web_port = free_port()
        env = cluster_env(tmp_path, web_port, example_index, shared_venvs, address, redis.url if redis else None)
        made.append(Chaos(open_cluster(tmp_path, env, web_port), redis, private))
        return made[-1]

    yield build
    for chaos in made:
        chaos.cluster.close()
        if chaos.kafka:
            chaos.kafka("down")
