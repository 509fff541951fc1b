"""Login and logout (Flask-Login), with failed-login backoff (``kirby.web.throttle``).

Local users (``kirby adduser``) are checked against their password hash (unless
``KIRBY_LOCAL_LOGIN=false``); any other name goes to the state's ``password_provider`` (LDAP),
whose identity ``kirby.external_users.sign_in_external`` turns into a user with the role of its
groups, or a refusal page (403). An external user's groups are checked again once its last check
is older than ``KIRBY_ROLE_REFRESH`` (``refresh_external``): its provider's refresher looks it up;
when there is none or it cannot tell, the session ends and the user is asked to log in again.
The session holds the user id and the user's *session generation* at login; role, ``active``
and the generation are re-read from the database on each request, so a demoted or deactivated
user loses rights at once, and logout or a new password (which bump the generation) end every
existing session of that user. The client address is ``request.remote_addr``: the TCP peer, or
the proxy's ``X-Forwarded-For`` when the peer is in ``KIRBY_TRUSTED_PROXIES`` (``kirby.web.proxy``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select, update
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from kirby.external_users import LoginRefused, ProviderUnavailable, refresh_external, role_refresh_due, sign_in_external
from kirby.models import Provider, Role, User
from kirby.users import verify_or_dummy
from kirby.web.redirects import is_safe_return_url
from kirby.web.state import web_state

log = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see this page."
login_manager.session_protection = "strong"
GENERATION_KEY = "kirby_generation"  # the user's session generation when this session logged in
OIDC_ID_TOKEN_KEY = "kirby_oidc_id_token"  # set by kirby.web.oidc_views with KIRBY_OIDC_LOGOUT


@dataclass(frozen=True)
class LoginUser:
    """The logged-in user as Flask-Login sees it (detached from any database session)."""

    id: int
    username: str
    role: Role
    is_authenticated: bool = True
    is_active: bool = True
    is_anonymous: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def get_id(self) -> str:
        return str(self.id)


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=128)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


@login_manager.user_loader
def load_user(user_id: str) -> LoginUser | None:
    if not user_id.isdigit():
        return None
    state = web_state()
    with state.database.session() as s:
        user = s.get(User, int(user_id))
        if user is None or not user.active or session.get(GENERATION_KEY) != user.session_generation:
            return None  # deleted, deactivated, or its sessions were revoked (logout, new password)
        now = state.clock.now()
        if role_refresh_due(user, state.settings, now):
            refresher = state.role_refreshers.get(user.provider)
            if not refresh_external(s, state.settings, user, refresher, now):
                flash("Please log in again: Kirby checks your groups again from time to time.", "info")
                return None
        return LoginUser(user.id, user.username, user.role)


def _return_url() -> str:
    """Where to go after login: ``next`` if it passed ``kirby.web.redirects`` (checked before
    every request), else the home page."""
    target = request.args.get("next")
    return target if is_safe_return_url(target) else url_for("admin.index")


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if current_user.is_authenticated and request.method == "GET":
        return redirect(_return_url())
    status = 200
    if form.validate_on_submit():
        state = web_state()
        username, address = form.username.data.strip().lower(), request.remote_addr or "?"
        wait = state.throttle.attempt(username, address, state.throttle.clock())  # counted before the answer
        if wait > 0:
            flash(f"Too many failed logins: try again in {int(wait) + 1} s.", "error")
            return render_template("kirby/login.html", form=form), 429
        try:
            found, generation = _check_password(state, form.username.data.strip(), form.password.data)
        except LoginRefused as refused:
            flash(str(refused), "error")
            return render_template("kirby/login.html", form=form), 403
        except ProviderUnavailable as unavailable:
            log.error(
                "login of %r failed: %s (%s)", name_for_log(form.username.data), unavailable.detail, unavailable.setting
            )
            flash(str(unavailable), "error")
            return render_template("kirby/login.html", form=form), 503
        if found is None:
            flash("Wrong username or password.", "error")
            status = 401
        else:
            state.throttle.succeeded(username, address)
            session.clear()  # a fresh session on login (no fixation)
            login_user(found)
            session[GENERATION_KEY] = generation
            return redirect(_return_url())
    elif request.method == "POST":
        status = 400
    return render_template("kirby/login.html", form=form), status


def name_for_log(name: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in name.strip()[:128])


def _check_password(state, name: str, password: str) -> tuple[LoginUser | None, int]:
    """The user that ``name`` and ``password`` log in as, with its session generation, or (None, 0).

    A local user (when KIRBY_LOCAL_LOGIN allows) is checked against its hash; any other name goes
    to the password provider (LDAP) when there is one. Raises LoginRefused, ProviderUnavailable."""
    with state.database.session() as s:
        user = s.scalars(select(User).where(User.username == name)).first() if name else None
        local = user is not None and user.provider == Provider.LOCAL
        stored = (user.password_hash, user.active, user.session_generation) if local else (None, False, 0)
        found = LoginUser(user.id, user.username, user.role) if local else None
    if state.password_provider is not None and not (local and state.settings.local_login):
        identity = state.password_provider.authenticate(name, password)
        if identity is None:
            return None, 0
        with state.database.session() as s:
            try:
                user = sign_in_external(s, state.settings, identity, state.clock.now())
            except LoginRefused:
                s.commit()  # a known user refused now has its open sessions ended
                raise
            return LoginUser(user.id, user.username, user.role), user.session_generation
    # the connection is back in the pool before the slow hash: parallel logins cannot exhaust it
    password_hash, active, generation = stored
    if not state.settings.local_login:
        password_hash = None
    if not verify_or_dummy(password_hash, password, state.settings) or not active:
        return None, 0
    return found, generation


def _provider_logout_url() -> str | None:
    """With KIRBY_OIDC_LOGOUT, for a user who signed in with OpenID Connect: the provider's
    end_session_endpoint URL (RP-initiated logout), where logout continues. Otherwise None."""
    client = web_state().oidc
    if client is None or not client.settings.oidc_logout or OIDC_ID_TOKEN_KEY not in session:
        return None
    return client.logout_url(session[OIDC_ID_TOKEN_KEY])


def revoke_sessions(user_id: int) -> None:
    """End every existing session of the user (each carries the generation it logged in with)."""
    with web_state().database.session() as s:
        s.execute(update(User).where(User.id == user_id).values(session_generation=User.session_generation + 1))


@blueprint.route("/logout", methods=["POST"])
def logout():
    provider_logout = _provider_logout_url()  # read before the session ends
    if current_user.is_authenticated:
        revoke_sessions(current_user.id)
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(provider_logout or url_for("auth.login"))
