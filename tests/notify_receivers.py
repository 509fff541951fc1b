"""Real receivers for notification tests: an SMTP server (aiosmtpd, on 127.0.0.1 over TCP) and an
HTTP webhook receiver (http.server), each on a free port, recording what they received."""

from __future__ import annotations

import json
import logging
import socket
import threading
import warnings
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def body(self) -> str:
        return self.message.get_content()


class SmtpSink:
    """A real SMTP server; ``mails`` lists what was delivered. With ``login``, AUTH is required."""

    def __init__(self, login: tuple[str, str] | None = None):
        self.mails: list[Mail] = []
        self.port = free_port()
        self.login = login
        self.logins: list[str] = []
        kwargs = {}
        if login:  # plain-text AUTH on 127.0.0.1 is what the test wants; aiosmtpd warns about it
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            logging.getLogger("mail.log").setLevel(logging.ERROR)
            kwargs = {"auth_required": True, "auth_require_tls": False, "authenticator": self._authenticate}
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **kwargs)

    @property
    def url(self) -> str:
        credentials = f"{self.login[0]}:{self.login[1]}@" if self.login else ""
        return f"smtp://{credentials}127.0.0.1:{self.port}"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        user, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append(user)
        return AuthResult(success=(user, password) == self.login, handled=False)  # the server answers 235/535

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content, policy=policy.default)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    raw: bytes
    json: dict = field(default_factory=dict)


class WebhookReceiver:
    """An HTTP server on a fixed free port; ``hooks`` lists the POSTs it answered ``status`` to.
    ``start()`` and ``stop()`` may be called repeatedly (a receiver that is down, then up)."""

    def __init__(self):
        self.port = free_port()
        self.hooks: list[Hook] = []
        self.status = 200
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.status == 200:
                    receiver.hooks.append(Hook(self.path, dict(self.headers), raw, json.loads(raw)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
