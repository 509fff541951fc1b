"""Login and logout (Flask-Login), with failed-login backoff per (username, client address).

Users are local (``kirby adduser``); ``kirby.users.authenticate`` checks the password hash.
The session holds only the user id; role and ``active`` are re-read from the database on each
request, so a demoted or deactivated user loses rights at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from kirby.models import Role, User
from kirby.users import authenticate
from kirby.web.state import web_state

blueprint = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see this page."
login_manager.session_protection = "strong"


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
        if user is None or not user.active:
            return None
        return LoginUser(user.id, user.username, user.role)


def _safe_next(target: str | None) -> str:
    """Only local paths are followed after login (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("admin.index")


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    if current_user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    status = 200
    if form.validate_on_submit():
        state = web_state()
        key = (form.username.data.strip().lower(), request.remote_addr or "?")
        wait = state.throttle.wait_seconds(key, time.monotonic())
        if wait > 0:
            flash(f"Too many failed logins: try again in {int(wait) + 1} s.", "error")
            return render_template("kirby/login.html", form=form), 429
        with state.database.session() as s:
            user = authenticate(s, state.settings, form.username.data.strip(), form.password.data)
            found = LoginUser(user.id, user.username, user.role) if user is not None and user.active else None
        if found is None:
            state.throttle.failure(key, time.monotonic())
            flash("Wrong username or password.", "error")
            status = 401
        else:
            state.throttle.success(key)
            session.clear()  # a fresh session on login (no fixation)
            login_user(found)
            return redirect(_safe_next(request.args.get("next")))
    elif request.method == "POST":
        status = 400
    return render_template("kirby/login.html", form=form), status


@blueprint.route("/logout", methods=["POST"])
def logout():
    logout_user()
    session.clear()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
