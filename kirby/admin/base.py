"""Base classes of every admin view: login required, and writes for admins only.

* ``KirbyForm``: Flask-Admin's ``SecureForm`` carrying Flask-WTF's CSRF token, so the same token
  satisfies ``CSRFProtect`` (checked on every POST) and the form's own validation.
* ``KirbyModelView``: anonymous users are redirected to the login page; viewers read; create,
  edit, delete and actions need the ``admin`` role (checked again on every request: a viewer who
  posts to an edit URL gets 403). No export (lists could carry secrets).
* ``AdminOnlyModelView``: the whole view (read included) is for admins (users).
"""

from __future__ import annotations

import enum
import re
from datetime import datetime

from flask import abort, flash, has_request_context, redirect, request, url_for
from flask_admin import BaseView
from flask_admin.contrib.sqla import ModelView
from flask_admin.contrib.sqla.form import AdminModelConverter
from flask_admin.form import SecureForm
from flask_admin.model import typefmt
from flask_admin.model.form import converts
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError, SQLAlchemyError


class KirbyForm(SecureForm):
    class Meta(FlaskForm.Meta):
        pass


def is_admin() -> bool:
    return has_request_context() and current_user.is_authenticated and current_user.is_admin


class _Access:
    """Login and role checks, and the web state (``state``: settings, database, bus, leases,
    clock), which every view receives from ``init_admin`` instead of reaching for it."""

    admin_only = False

    def __init__(self, *args, state=None, **kwargs):
        self.state = state
        super().__init__(*args, **kwargs)

    def is_accessible(self) -> bool:
        if not current_user.is_authenticated:
            return False
        return is_admin() if self.admin_only else True

    def inaccessible_callback(self, name, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        abort(403)


class KirbyBaseView(_Access, BaseView):
    """A custom page (not a model list) for logged-in users."""


def _enum_choice(value) -> str:
    return value.value if isinstance(value, enum.Enum) else str(value)


class ModelConverter(AdminModelConverter):
    """Enum selects keyed by the enum's value (what the database stores), not by its name.

    Flask-Admin keys existing values by name ("LATEST") while offering values ("latest"), so an
    edit form would show, and save, the first choice instead of the stored one.
    """

    @converts("sqlalchemy.sql.sqltypes.Enum")
    def convert_enum(self, column, field_args, **extra):
        field = super().convert_enum(column, field_args, **extra)
        field.kwargs["coerce"] = _enum_choice
        return field


def _utc_time(view, value, name) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _enum_value(view, value, name) -> str:
    return str(value.value)


TYPE_FORMATTERS = {**typefmt.BASE_FORMATTERS, datetime: _utc_time, enum.Enum: _enum_value}


class KirbyModelView(_Access, ModelView):
    form_base_class = KirbyForm
    model_form_converter = ModelConverter
    column_type_formatters = TYPE_FORMATTERS
    column_type_formatters_detail = TYPE_FORMATTERS
    can_export = False
    can_view_details = True
    page_size = 50
    create_modal = False
    edit_modal = False
    details_modal = False

    @property
    def can_create(self) -> bool:
        return is_admin()

    @property
    def can_edit(self) -> bool:
        return is_admin()

    @property
    def can_delete(self) -> bool:
        return is_admin()

    def is_action_allowed(self, name: str) -> bool:
        return is_admin() and super().is_action_allowed(name)

    def handle_view_exception(self, exc: Exception) -> bool:
        """A database error while saving is shown without the statement's parameters: Flask-Admin
        would echo ``str(exc)``, which holds the values just typed (a secret config value too)."""
        if isinstance(exc, SQLAlchemyError):
            flash(f"Could not save: {database_reason(exc)}", "error")
            return True
        return super().handle_view_exception(exc)

    def _handle_view(self, name, **kwargs):
        """Every POST to a model view (create, edit, delete, actions, ajax) needs the admin role."""
        response = super()._handle_view(name, **kwargs)
        if response is None and request.method == "POST" and not is_admin():
            abort(403)
        return response


def database_reason(exc: Exception) -> str:
    """The database's reason for refusing a write, without any value: the constraint it names."""
    if isinstance(exc, IntegrityError):
        original = str(getattr(exc, "orig", "") or "")
        constraint = re.search(r'constraint "?([\w.]+)"?|failed: ([\w., ]+)', original)
        what = next((g for g in constraint.groups() if g), None) if constraint else None
        return f"a record like this already exists, or a required value is missing ({what or 'integrity error'})"
    return f"the database refused the change ({type(exc).__name__})"


class AdminOnlyModelView(KirbyModelView):
    admin_only = True
