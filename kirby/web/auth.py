"""Login and logout (Flask-Login), with failed-login backoff (``kirby.web.throttle``).

Users are local (``kirby adduser``); ``kirby.users.authenticate`` checks the password hash.
The session holds the user id and the user's *session generation* at login; role, ``active``
and the generation are re-read from the database on each request, so a demoted or deactivated
user loses rights at once, and logout or a new password (which bump the generation) end every
existing session of that user. The client address is ``request.remote_addr``: the TCP peer, or
the proxy's ``X-Forwarded-For`` when the peer is in ``KIRBY_TRUSTED_PROXIES`` (``kirby.web.proxy``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import select, update
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from kirby.models import Role, User
from kirby.users import verify_or_dummy
from kirby.web.redirects import is_safe_return_url
from kirby.web.state import web_state

blueprint = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see this page."
login_manager.session_protection = "strong"
GENERATION_KEY = "kirby_generation"  # the user's session generation when this session logged in


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
    with web_state().database.session() as s:
        user = s.get(User, int(user_id))
        if user is None or not user.active or session.get(GENERATION_KEY) != user.session_generation:
            return None  # deleted, deactivated, or its sessions were revoked (logout, new password)
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
        name = form.username.data.strip()
        with state.database.session() as s:
            user = s.scalars(select(User).where(User.username == name)).first() if name else None
            stored = (user.password_hash, user.active, user.session_generation) if user else (None, False, 0)
            found = LoginUser(user.id, user.username, user.role) if user else None
        # the connection is back in the pool before the slow hash: parallel logins cannot exhaust it
        password_hash, active, generation = stored
        if not verify_or_dummy(password_hash, form.password.data, state.settings) or not active:
            found = None
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


def revoke_sessions(user_id: int) -> None:
    """End every existing session of the user (each carries the generation it logged in with)."""
    with web_state().database.session() as s:
        s.execute(update(User).where(User.id == user_id).values(session_generation=User.session_generation + 1))


@blueprint.route("/logout", methods=["POST"])
def logout():
    if current_user.is_authenticated:
        revoke_sessions(current_user.id)
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
