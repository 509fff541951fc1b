"""Users (admins only): the password is set through a write-only field and stored hashed.

A new password (at least ``MIN_PASSWORD_LENGTH`` characters) also ends every session the user has
open (``kirby.users.set_password`` bumps the session generation).
"""

from __future__ import annotations

from wtforms import PasswordField
from wtforms.validators import Length, Optional, ValidationError

from kirby.admin.base import AdminOnlyModelView
from kirby.users import MIN_PASSWORD_LENGTH, set_password


class UserView(AdminOnlyModelView):
    column_list = ("username", "role", "active", "created_at")
    column_searchable_list = ("username",)
    column_filters = ("role", "active")
    column_details_list = ("username", "role", "active", "created_at")
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
    column_labels = {"new_password": "Password"}

    def on_model_change(self, form, model, is_created) -> None:
        password = form.new_password.data
        if is_created and not password:
            raise ValidationError(f"a new user needs a password (at least {MIN_PASSWORD_LENGTH} characters)")
        if password:
            set_password(model, password, self.state.settings)
