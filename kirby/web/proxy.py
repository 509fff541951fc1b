"""Believe a reverse proxy's ``X-Forwarded-For``/``X-Forwarded-Proto`` only from a trusted proxy.

``TrustedProxies(wsgi_app, networks)``: when the TCP peer (``REMOTE_ADDR``) is in one of
``networks`` (``KIRBY_TRUSTED_PROXIES``), Werkzeug's ``ProxyFix`` takes the client address from
the last ``X-Forwarded-For`` entry (the one the proxy itself added: nginx's
``$proxy_add_x_forwarded_for`` appends the peer it saw) and the scheme from
``X-Forwarded-Proto``. From any other peer these headers are removed, so a client cannot choose
the address the login throttle sees. With no trusted proxy every client is its TCP peer.
"""

from __future__ import annotations

import ipaddress

from werkzeug.middleware.proxy_fix import ProxyFix

_FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PORT")


class TrustedProxies:
    def __init__(self, app, networks: tuple[str, ...]):
        self.app = app
        self.networks = tuple(ipaddress.ip_network(n) for n in networks)
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=0, x_port=0, x_prefix=0)

    def trusted(self, peer: str | None) -> bool:
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(self, environ, start_response):
        if self.networks and self.trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        for name in _FORWARDED:
            environ.pop(name, None)
        return self.app(environ, start_response)
