"""How a channel says a send failed: worth retrying later, or not."""

from __future__ import annotations


class DeliveryError(Exception):
    """A notification could not be sent through one channel; the message names the target."""


class TransientError(DeliveryError):
    """Retry later (the receiver is down, a timeout, HTTP 5xx)."""


class PermanentError(DeliveryError):
    """Retrying will not help (no SMTP configured, an address refused, HTTP 4xx)."""
