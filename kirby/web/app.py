"""The web app factory: ``create_app(settings, database=None, bus=None, lease_store=None)``.

Builds the Flask app over the script database: login (``auth``), the Flask-Admin panel
(``kirby.admin``), the JSON API (``api``) and live logs (``logs``), with CSRF protection on every
form, security headers on every response, one check of every return URL (``redirects``) and the
client address from a trusted reverse proxy only (``proxy``). It does not start the run events consumer; ``kirby
web`` (``kirby.web.server``) does. Bus and lease store are opened on first use unless given.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask, redirect, request, url_for
from flask_wtf.csrf import CSRFProtect

from kirby.admin import init_admin
from kirby.config import Settings
from kirby.db import Database, open_database
from kirby.ldap_auth import LdapDirectory
from kirby.models import Provider
from kirby.web import api, auth, logs, oidc_views, rest
from kirby.web.oidc_login import OidcClient
from kirby.web.proxy import TrustedProxies
from kirby.web.queries import check_paging
from kirby.web.redirects import check_return_parameters
from kirby.web.security import SessionInterface, add_security_headers
from kirby.web.state import WebState

log = logging.getLogger(__name__)
csrf = CSRFProtect()


def create_app(settings: Settings, database: Database | None = None, bus=None, lease_store=None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        TESTING=settings.testing,
        WTF_CSRF_ENABLED=not settings.testing,
        WTF_CSRF_TIME_LIMIT=None,  # tokens live as long as the session
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="kirby_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        REMEMBER_COOKIE_HTTPONLY=True,
        MAX_CONTENT_LENGTH=2 * 1024 * 1024,
        KIRBY_SSE_POLL=0.5,
        KIRBY_SSE_LIFETIME=300.0,
    )
    app.session_interface = SessionInterface()

    state = WebState(settings, database or open_database(settings), _bus=bus, _lease_store=lease_store)
    if database is None:
        state.owns.add("database")
    app.extensions["kirby"] = state
    if settings.ldap_url:  # the password form's non-local users (README "Users and login")
        directory = LdapDirectory(settings)
        state.password_provider = directory
        if directory.can_refresh:
            state.role_refreshers[Provider.LDAP] = directory.refresh
    if settings.oidc_issuer:  # read the provider now: a bad KIRBY_OIDC_ISSUER stops kirby web at start
        state.oidc = OidcClient.discover(settings)

    csrf.init_app(app)
    csrf.exempt(rest.blueprint)  # checks CSRF itself for sessions; token clients have no CSRF token
    auth.login_manager.init_app(app)
    app.register_blueprint(auth.blueprint)
    if state.oidc is not None:  # /login/oidc and its callback exist only when configured
        app.register_blueprint(oidc_views.blueprint)
        if settings.oidc_logout and state.oidc.logout_origin:  # logout continues there (CSP form-action)
            app.config["KIRBY_FORM_ACTION_ORIGINS"] = (state.oidc.logout_origin,)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(rest.blueprint)
    app.register_blueprint(logs.blueprint)

    init_admin(app, state)
    app.after_request(add_security_headers)
    app.before_request(check_return_parameters)  # the one check of every return URL (next=, url=)
    app.before_request(lambda: check_paging(request.args))  # page=10**20 is a 400, not a 500
    app.wsgi_app = TrustedProxies(app.wsgi_app, settings.trusted_proxies)

    @app.teardown_appcontext
    def _remove_session(_exc=None) -> None:
        state.scoped.remove()

    @app.route("/")
    def root():
        return redirect(url_for("admin.index"))

    return app
