"""Users (admins only): the password is set through a write-only field and stored hashed.

A new password (at least ``MIN_PASSWORD_LENGTH`` characters) also ends every session the user has
open (``kirby.users.set_password`` bumps the session generation). The provider column says where a
user's identity comes from: ``local`` users are made here or by ``kirby adduser``; ``ldap`` and
``oidc`` users are made by their first login (``kirby.external_users``), have no Kirby password,
and get their role from their groups at each login and role refresh (an edit here lasts until then).
"""

from __future__ import annotations

from wtforms import PasswordField
from wtforms.validators import Length, Optional, ValidationError

from kirby.admin.base import AdminOnlyModelView
from kirby.models import Provider
from kirby.users import MIN_PASSWORD_LENGTH, set_password


class UserView(AdminOnlyModelView):
    column_list = ("username", "provider", "role", "active", "created_at")
    column_searchable_list = ("username",)
    column_filters = ("provider", "role", "active")
    column_details_list = ("username", "provider", "subject", "role", "roles_checked_at", "active", "created_at")
    form_columns = ("username", "role", "active", "new_password")
    form_extra_fields = {
        "new_password": PasswordField(
            "Password",
            validators=[
                Optional(),
                Length(
                    min=MIN_PASSWORD_LENGTH,
                    max=1024,
                    message=f"use at least {MIN_PASSWORD_LENGTH} characters (at most 1024)",
                ),
            ],
            description=f"At least {MIN_PASSWORD_LENGTH} characters. On an existing user, leave blank to keep "
            "the password. A new password ends the user's open sessions.",
        )
    }
    column_labels = {"new_password": "Password", "subject": "Provider's id", "roles_checked_at": "Groups checked"}

    def on_model_change(self, form, model, is_created) -> None:
        password = form.new_password.data
        if password and not is_created and model.provider != Provider.LOCAL:
            raise ValidationError(f"{model.username} is an {model.provider} user: its password is its provider's")
        if is_created and not password:
            raise ValidationError(f"a new user needs a password (at least {MIN_PASSWORD_LENGTH} characters)")
        if password:
            set_password(model, password, self.state.settings)
