"""Users (admins only): the password is set through a write-only field and stored hashed."""

from __future__ import annotations

from wtforms import PasswordField
from wtforms.validators import Length, Optional, ValidationError

from kirby.admin.base import AdminOnlyModelView
from kirby.users import hash_password


class UserView(AdminOnlyModelView):
    column_list = ("username", "role", "active", "created_at")
    column_searchable_list = ("username",)
    column_filters = ("role", "active")
    column_details_list = ("username", "role", "active", "created_at")
    form_columns = ("username", "role", "active", "new_password")
    form_extra_fields = {
        "new_password": PasswordField(
            "Password",
            validators=[Optional(), Length(min=8, max=1024)],
            description="At least 8 characters. On an existing user, leave blank to keep the password.",
        )
    }
    column_labels = {"new_password": "Password"}

    def on_model_change(self, form, model, is_created) -> None:
        password = form.new_password.data
        if is_created and not password:
            raise ValidationError("a new user needs a password (at least 8 characters)")
        if password:
            model.password_hash = hash_password(password, self.state.settings)
