"""Exit 0 when the Kafka broker at HOST:PORT answers a metadata request listing a broker.

Standard library only (the services start before any virtualenv exists). Sends one Metadata v4
request (supported by Kafka 2.x to 4.x) and checks that the response names at least one broker.
Usage: python3 ready.py HOST:PORT
"""

import socket
import struct
import sys

METADATA_API_KEY = 3
METADATA_VERSION = 4


def metadata_request(correlation_id: int) -> bytes:
    client_id = b"kirby-deploy-ready"
    header = struct.pack(">hhih", METADATA_API_KEY, METADATA_VERSION, correlation_id, len(client_id))
    body = struct.pack(">ib", 0, 0)  # no topics (brokers only), no auto-creation
    message = header + client_id + body
    return struct.pack(">i", len(message)) + message


def read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


def broker_count(address: str, timeout: float = 3.0) -> int:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(metadata_request(correlation_id=7))
        (size,) = struct.unpack(">i", read_exactly(connection, 4))
        response = read_exactly(connection, size)
    correlation_id, _throttle, brokers = struct.unpack(">iii", response[:12])
    if correlation_id != 7:
        raise ConnectionError(f"unexpected correlation id {correlation_id}")
    return brokers


def main() -> int:
    try:
        count = broker_count(sys.argv[1])
    except (OSError, ValueError, struct.error) as error:
        print(f"kafka not ready: {error}", file=sys.stderr)
        return 1
    return 0 if count > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
