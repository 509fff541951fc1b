"""The one check every return URL goes through (login ``next``, Flask-Admin ``url``).

A return URL is followed only if it is a path on this site: it starts with a single ``/``, has no
scheme, no host, no backslash and no control character. Browsers are lenient about the rest
(``http:/evil.example`` and ``/\\evil.example`` both lead off-site), so the rule is strict rather
than clever. ``check_return_parameters`` runs before every request: a bad return URL is a 400
naming the parameter (a CRLF never reaches a ``Location`` header).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request

from kirby.web.queries import BadQuery

RETURN_PARAMETERS = ("next", "url")


def is_safe_return_url(target: str | None) -> bool:
    """True iff ``target`` is a relative path on this site (e.g. ``/admin/job/?page=2``)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return False
    if "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def check_return_parameters() -> None:
    """Before each request: every return parameter given (query string or form) must be safe."""
    sources = [request.args]
    if request.method == "POST" and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sources.append(request.form)
    for source in sources:
        for name in RETURN_PARAMETERS:
            for value in source.getlist(name):
                if value and not is_safe_return_url(value):
                    raise BadQuery(f"{name}={value!r}: a return URL must be a path on this site, e.g. /admin/")
