"""Email channel: one plain-text email per address, through the SMTP server of ``KIRBY_SMTP_URL``.

``smtp://[user:password@]host[:port][?starttls=true]`` (port 25 by default; 587 is usual with
STARTTLS) or ``smtps://...`` (TLS from the start, port 465 by default). User and password are
URL-decoded.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlparse

from kirby.errors import ConfigError
from kirby.notify.errors import PermanentError, TransientError
from kirby.notify.message import Message

TIMEOUT = 15.0


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    tls: bool = False  # smtps: TLS from the start
    starttls: bool = False


def parse_smtp_url(url: str) -> SmtpServer:
    parsed = urlparse(url)
    if parsed.scheme not in ("smtp", "smtps") or not parsed.hostname:
        raise ConfigError("KIRBY_SMTP_URL is not an SMTP URL: use e.g. smtp://user:pass@host:587?starttls=true")
    query = {k: v[-1].lower() for k, v in parse_qs(parsed.query).items()}
    starttls = query.get("starttls", "false") in ("1", "true", "yes", "on")
    tls = parsed.scheme == "smtps"
    return SmtpServer(
        host=parsed.hostname,
        port=parsed.port or (465 if tls else 25),
        user=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
        tls=tls,
        starttls=starttls,
    )


def compose(message: Message, sender: str, to: str) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = message.subject
    mail["From"] = sender
    mail["To"] = to
    mail["X-Kirby-Key"] = message.key
    mail.set_content(message.text())
    return mail


def send(server: SmtpServer, sender: str, to: str, message: Message, timeout: float = TIMEOUT) -> None:
    """Send ``message`` to ``to``; raises TransientError (retry later) or PermanentError (do not)."""
    mail = compose(message, sender, to)
    where = f"SMTP {server.host}:{server.port}"
    try:
        if server.tls:
            client = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=timeout)
        with client:
            if server.starttls:
                client.starttls(context=ssl.create_default_context())
            if server.user:
                client.login(server.user, server.password or "")
            client.send_message(mail)
    except smtplib.SMTPAuthenticationError:
        raise PermanentError(f"{where}: the server refused the user and password of KIRBY_SMTP_URL") from None
    except smtplib.SMTPRecipientsRefused:
        raise PermanentError(f"{where}: the server refused the address {to}") from None
    except smtplib.SMTPResponseException as exc:
        error = PermanentError if 500 <= exc.smtp_code < 600 else TransientError
        raise error(f"{where}: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')[:200]}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise TransientError(f"{where}: {type(exc).__name__}: {exc}"[:300]) from None
