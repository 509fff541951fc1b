"""Private Redis and Kafka servers a test starts, stops, freezes and restarts (the shared ones
from deploy/services must not be disturbed: other tests use them)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tests.helpers import wait_for

SERVICES = Path(__file__).resolve().parents[1] / "deploy" / "services"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    """A redis-server of the test's own, on a free port; no persistence unless ``options`` ask
    (e.g. ``"--appendonly", "yes"``); its files live in ``directory``."""

    def __init__(self, directory: Path, *options: str):
        self.port = free_port()
        self.directory = directory
        self.options = list(options)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.answers, 10, f"the private redis-server on port {self.port} answered")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # up (maybe with a password)
        except OSError:
            return False

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): with AOF on, what it acknowledged is on disk."""
        self.process.terminate()
        self.process.wait(timeout=30)

    def wipe(self) -> None:
        """Forget everything on disk (call while stopped): the next start is empty."""
        for child in self.directory.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing answers (unreachable, data kept)."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)


class PrivateKafka:
    """A single KRaft broker of the test's own, through deploy/services with private ports and folder."""

    def __init__(self, directory: Path):
        self.port, self.controller = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._environ = {
            **os.environ,
            "KIRBY_SERVICES_DIR": str(directory),
            "KIRBY_KAFKA_PORT": str(self.port),
            "KIRBY_KAFKA_CONTROLLER_PORT": str(self.controller),
        }

    def __call__(self, command: str) -> None:
        """``up``, ``down`` or ``restart``."""
        subprocess.run(
            [str(SERVICES), command, "kafka"], env=self._environ, check=True, timeout=180, stdout=subprocess.DEVNULL
        )
