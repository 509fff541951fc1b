"""Webhook channel: POST a notification as JSON, in Kirby's format or Slack's or Teams'.

Formats (``NotificationWebhook.format``):

* ``json``: ``Message.as_json()``: ``kirby_notification`` (1), ``key`` (unique per run, event and
  group: a receiver can deduplicate on it), ``event``, ``title``, ``job``, ``environment``,
  ``group``, ``detail``, ``run_id``, ``state``, ``exit_code``, ``signal``, ``duration_seconds``,
  ``supervisor``, ``scheduled_at``, ``finished_at`` (ISO 8601 UTC), ``error``, ``log_tail`` (last
  20 lines, masked), ``run_url``, ``logs_url``, ``digest_count``, ``digest_run_ids``;
* ``slack``: ``{"text": ...}`` (a Slack incoming webhook);
* ``teams``: a MessageCard (a Teams incoming webhook / workflow) with a link to the run.

Every request carries ``X-Kirby-Event`` and ``X-Kirby-Key``; with a secret it also carries
``X-Kirby-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import requests

from kirby.notify.errors import PermanentError, TransientError
from kirby.notify.message import Message

FORMATS = ("json", "slack", "teams")
SIGNATURE_HEADER = "X-Kirby-Signature-256"
TIMEOUT = 10.0


def body(message: Message, format: str) -> dict:
    if format == "slack":
        return {"text": message.text()}
    if format == "teams":
        card = {
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": message.subject,
            "title": message.subject,
            "themeColor": "2EB886" if message.event in ("recovered", "test") else "D63333",
            "text": "<pre>" + message.text().replace("&", "&amp;").replace("<", "&lt;") + "</pre>",
        }
        if message.run_url:
            card["potentialAction"] = [
                {"@type": "OpenUri", "name": "Open the run", "targets": [{"os": "default", "uri": message.run_url}]}
            ]
        return card
    return message.as_json()


def signature(secret: str, raw: bytes) -> str:
    """The ``X-Kirby-Signature-256`` value of ``raw`` under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def verify(secret: str, raw: bytes, header: str) -> bool:
    """What a receiver checks: ``header`` is the signature of ``raw`` under ``secret``."""
    return hmac.compare_digest(signature(secret, raw), header or "")


def send(url: str, format: str, secret: str, message: Message, timeout: float = TIMEOUT) -> None:
    """POST ``message``; raises TransientError (retry later) or PermanentError (do not)."""
    raw = json.dumps(body(message, format), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "X-Kirby-Event": message.event, "X-Kirby-Key": message.key}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, raw)
    try:
        response = requests.post(url, data=raw, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise TransientError(f"POST {url}: {type(exc).__name__}") from None
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise TransientError(f"POST {url}: HTTP {response.status_code}")
    if response.status_code >= 300:
        raise PermanentError(f"POST {url}: HTTP {response.status_code}; check the webhook's URL")
