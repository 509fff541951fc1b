"""Kafka connection settings: TLS variables reach every client; errors are one line naming the variable."""

from __future__ import annotations

from pathlib import Path

from kafka.errors import NoBrokersAvailable, TopicAuthorizationFailedError

from kirby.bus.kafka import bus_error, client_config


def test_tls_settings_reach_the_clients(make_settings, tmp_path: Path):
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-")
    settings = make_settings(
        KAFKA_BOOTSTRAP_SERVERS="10.0.0.1:9093, 10.0.0.2:9093",
        KAFKA_USE_SSL="true",
        KAFKA_SSL_CAFILE=str(files["ca"]),
        KAFKA_SSL_CERTFILE=str(files["cert"]),
        KAFKA_SSL_KEYFILE=str(files["key"]),
    )
    config = client_config(settings)
    assert config["bootstrap_servers"] == ["10.0.0.1:9093", "10.0.0.2:9093"]
    assert config["security_protocol"] == "SSL"
    assert (config["ssl_cafile"], config["ssl_certfile"], config["ssl_keyfile"]) == tuple(
        str(p) for p in files.values()
    )
    assert "security_protocol" not in client_config(make_settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092"))


def test_errors_name_the_address_the_variables_and_the_fix(make_settings, tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-")
    tls = make_settings(KAFKA_BOOTSTRAP_SERVERS="10.0.0.1:9093", KAFKA_USE_SSL="true", KAFKA_SSL_CAFILE=str(ca))
    unreachable = str(bus_error(tls, "connect", NoBrokersAvailable()))
    assert unreachable.startswith(
        "cannot reach Kafka at 10.0.0.1:9093 (KAFKA_BOOTSTRAP_SERVERS) to connect: NoBrokersAvailable"
    )
    assert "KAFKA_USE_SSL" in unreachable and "deploy/services up kafka" in unreachable
    refused = str(bus_error(tls, "publish to t", TopicAuthorizationFailedError("not allowed\nsecond line")))
    assert "refused to publish to t" in refused and "\n" not in refused
