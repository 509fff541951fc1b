"""The real services started by ``deploy/services`` answer on the addresses that ``env`` prints,
and the script itself starts, reports and stops a private instance without touching others."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

SERVICES = Path(__file__).resolve().parents[2] / "deploy" / "services"


def run_services(*arguments: str, **variables: str) -> subprocess.CompletedProcess:
    """Run deploy/services with only the given KIRBY_* variables (nothing inherited)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KIRBY_")}
    environ.update(variables)
    return subprocess.run([str(SERVICES), *arguments], env=environ, capture_output=True, text=True, timeout=120)


def status_of(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """The words of each line of ``deploy/services status``, by service name."""
    return {line.split()[0]: line.split() for line in result.stdout.splitlines()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.kafka
def test_kafka_round_trip_on_a_fresh_topic(kafka_servers):
    topic = f"services-test-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_servers, topic)
    producer = KafkaProducer(bootstrap_servers=kafka_servers, acks="all")
    try:
        producer.send(topic, key=b"k", value=b"hello kirby").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_servers, group_id=topic, auto_offset_reset="earliest")
    try:
        received, deadline = [], time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend((record.key, record.value) for record in records)
    finally:
        consumer.close()
    assert received == [(b"k", b"hello kirby")], f"nothing consumed from {topic} within 30 s"


@pytest.mark.redis
def test_redis_ping_set_get(redis_url):
    client = redis.Redis.from_url(redis_url)
    key = f"services-test:{uuid.uuid4().hex}"
    try:
        assert client.ping() is True
        assert client.set(key, b"value", ex=60) is True
        assert client.get(key) == b"value"
    finally:
        client.delete(key)
        client.close()


@pytest.mark.postgres
def test_postgres_select_one(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("select 1")).scalar_one() == 1
            assert connection.execute(sa.text("select current_user")).scalar_one() == "kirby"
    finally:
        engine.dispose()


def make_wheel(folder: Path, name: str) -> Path:
    """A minimal valid wheel of an empty distribution ``name`` 1.0."""
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: kirby-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.pypi
def test_pypiserver_lists_a_wheel_copied_into_the_wheelhouse(package_index, wheelhouse, tmp_path):
    name = f"kirby_services_probe_{uuid.uuid4().hex[:8]}"
    wheel = make_wheel(tmp_path, name)
    target = wheelhouse / wheel.name
    target.write_bytes(wheel.read_bytes())
    try:
        with urllib.request.urlopen(package_index, timeout=10) as response:
            assert response.status == 200
            index = response.read().decode()
        project = name.replace("_", "-")
        assert f'href="{project}/"' in index
        with urllib.request.urlopen(f"{package_index}{project}/", timeout=10) as response:
            assert wheel.name in response.read().decode()
    finally:
        target.unlink()


def test_env_prints_the_exports_for_the_chosen_ports_and_folder(tmp_path):
    result = run_services(
        "env",
        KIRBY_SERVICES_DIR=str(tmp_path / "s"),
        KIRBY_KAFKA_PORT="19092",
        KIRBY_REDIS_PORT="16390",
        KIRBY_POSTGRES_PORT="15439",
        KIRBY_PYPI_PORT="18081",
        KIRBY_LDAP_PORT="13890",
        KIRBY_LDAPS_PORT="16360",
        KIRBY_OIDC_PORT="19400",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092",
        "export REDIS_URL=redis://127.0.0.1:16390/0",
        "export KIRBY_PACKAGE_INDEX=http://127.0.0.1:18081/simple/",
        f"export KIRBY_WHEELHOUSE={tmp_path / 's' / 'wheelhouse'}",
        "export KIRBY_TEST_DATABASE_URI=postgresql+psycopg://kirby:kirby@127.0.0.1:15439/kirby_test",
        "export KIRBY_TEST_LDAP_URL=ldap://127.0.0.1:13890",
        "export KIRBY_TEST_LDAPS_URL=ldaps://127.0.0.1:16360",
        f"export KIRBY_TEST_LDAP_CA_FILE={tmp_path / 's' / 'slapd' / 'certs' / 'ca.pem'}",
        "export KIRBY_TEST_OIDC_ISSUER=http://127.0.0.1:19400",
        "# export SQLALCHEMY_DATABASE_URI=postgresql+psycopg://kirby:kirby@127.0.0.1:15439/kirby",
    ]


def test_unknown_service_and_bad_port_are_refused(tmp_path):
    unknown = run_services("up", "mongo", KIRBY_SERVICES_DIR=str(tmp_path))
    assert unknown.returncode == 1
    assert "unknown service 'mongo'" in unknown.stderr
    bad_port = run_services("status", KIRBY_SERVICES_DIR=str(tmp_path), KIRBY_REDIS_PORT="63x")
    assert bad_port.returncode == 1
    assert "KIRBY_REDIS_PORT='63x' is not a port number" in bad_port.stderr


@pytest.mark.redis
def test_up_refuses_a_port_taken_by_another_process(tmp_path, redis_url):
    taken = redis_url.split(":")[2].split("/")[0]  # the shared Redis listens there
    result = run_services("up", "redis", KIRBY_SERVICES_DIR=str(tmp_path), KIRBY_REDIS_PORT=taken)
    assert result.returncode == 1
    assert f"port {taken} on 127.0.0.1 is taken by another process" in result.stderr
    assert "KIRBY_REDIS_PORT" in result.stderr


@pytest.mark.redis
def test_private_redis_up_status_down_is_idempotent(tmp_path, redis_url):
    """A private instance in its own folder and port; the shared services are left alone."""
    variables = {"KIRBY_SERVICES_DIR": str(tmp_path / "services"), "KIRBY_REDIS_PORT": str(free_port())}
    address = f"127.0.0.1:{variables['KIRBY_REDIS_PORT']}"
    try:
        first = run_services("up", "redis", **variables)
        assert first.returncode == 0, first.stderr
        again = run_services("up", "redis", **variables)
        assert again.returncode == 0 and "already running" in again.stderr

        status = run_services("status", **variables)
        assert status.returncode == 3  # the others are stopped in this private folder
        lines = status_of(status)
        assert lines["redis"][1:3] == ["running", address]
        assert lines["kafka"][1] == "stopped"
        pid = int(lines["redis"][-1])
        assert redis.Redis.from_url(f"redis://{address}/0").ping() is True
    finally:
        down = run_services("down", "redis", **variables)
    assert down.returncode == 0, down.stderr
    assert not Path(f"/proc/{pid}").exists(), "redis-server still runs after down"
    assert "stopped" in run_services("status", **variables).stdout.splitlines()[0]
    assert "not running" in run_services("down", "redis", **variables).stderr
    assert redis.Redis.from_url(redis_url).ping() is True  # the shared one still answers


def test_private_oidc_provider_up_answers_discovery_and_goes_down(tmp_path, oidc_issuer):
    """The OpenID Connect provider as a service: a private instance on its own port and folder."""
    variables = {"KIRBY_SERVICES_DIR": str(tmp_path / "services"), "KIRBY_OIDC_PORT": str(free_port())}
    issuer = f"http://127.0.0.1:{variables['KIRBY_OIDC_PORT']}"
    try:
        up = run_services("up", "oidc", **variables)
        assert up.returncode == 0, up.stderr
        assert "already running" in run_services("up", "oidc", **variables).stderr
        with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=10) as response:
            document = json.load(response)
        assert document["issuer"] == issuer and "S256" in document["code_challenge_methods_supported"]
        pid = int(status_of(run_services("status", **variables))["oidc"][-1])
    finally:
        down = run_services("down", "oidc", **variables)
    assert down.returncode == 0, down.stderr
    assert not Path(f"/proc/{pid}").exists(), "the provider still runs after down"
    with urllib.request.urlopen(f"{oidc_issuer}/.well-known/openid-configuration", timeout=10) as response:
        assert response.status == 200  # the shared one still answers


def create_topic(servers: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()


def produce(servers: str, topic: str, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=servers, acks="all")
    try:
        producer.send(topic, value=value).get(timeout=30)
    finally:
        producer.close()


def consume_one(servers: str, topic: str) -> bytes | None:
    consumer = KafkaConsumer(topic, bootstrap_servers=servers, group_id=topic, auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                return records[0].value
        return None
    finally:
        consumer.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_private_kafka_formats_starts_and_keeps_its_data_across_restart(tmp_path, kafka_servers):
    variables = {
        "KIRBY_SERVICES_DIR": str(tmp_path / "services"),
        "KIRBY_KAFKA_PORT": str(free_port()),
        "KIRBY_KAFKA_CONTROLLER_PORT": str(free_port()),
    }
    servers = f"127.0.0.1:{variables['KIRBY_KAFKA_PORT']}"
    try:
        up = run_services("up", "kafka", **variables)
        assert up.returncode == 0, up.stderr
        assert "formatting storage" in up.stderr
        create_topic(servers, "restart-check")
        produce(servers, "restart-check", b"kept")
        restart = run_services("restart", "kafka", **variables)
        assert restart.returncode == 0, restart.stderr
        assert "formatting storage" not in restart.stderr
        assert consume_one(servers, "restart-check") == b"kept"
    finally:
        down = run_services("down", "kafka", **variables)
    assert down.returncode == 0, down.stderr
    assert status_of(run_services("status", **variables))["kafka"][1] == "stopped"
    assert ready_check(kafka_servers), "the shared Kafka must still answer"


def ready_check(servers: str) -> bool:
    ready = SERVICES.parent / "kafka" / "ready.py"
    return subprocess.run(["python3", str(ready), servers], timeout=30).returncode == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_private_slapd_makes_its_ca_seeds_the_directory_offers_starttls_and_stops(tmp_path, slapd):
    """From an empty services folder: own slapd.conf, test CA, seed; StartTLS verified with that CA."""
    ldap_port, ldaps_port = _free_port(), _free_port()
    variables = {
        "KIRBY_SERVICES_DIR": str(tmp_path),
        "KIRBY_LDAP_PORT": str(ldap_port),
        "KIRBY_LDAPS_PORT": str(ldaps_port),
    }
    try:
        first = run_services("up", "slapd", **variables)
        assert first.returncode == 0, first.stderr
        assert "adding the seed users and groups" in first.stderr
        again = run_services("up", "slapd", **variables)
        assert again.returncode == 0 and "already running" in again.stderr
        lines = status_of(run_services("status", **variables))
        assert lines["slapd"][1:3] == ["running", f"127.0.0.1:{ldap_port}"]
        pid = int(lines["slapd"][-1])
        whoami = subprocess.run(
            ["ldapwhoami", "-x", "-ZZ", "-H", f"ldap://127.0.0.1:{ldap_port}"]
            + ["-D", "uid=vera,ou=people,dc=kirby,dc=test", "-w", "vera-password"],
            env={**os.environ, "LDAPTLS_CACERT": str(tmp_path / "slapd" / "certs" / "ca.pem")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert whoami.stdout.strip() == "dn:uid=vera,ou=people,dc=kirby,dc=test", whoami.stderr
    finally:
        down = run_services("down", "slapd", **variables)
    assert down.returncode == 0, down.stderr
    assert not Path(f"/proc/{pid}").exists(), "slapd still runs after down"
