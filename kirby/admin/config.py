"""Config keys: the global list, and the inline lists of jobs and contexts. Secrets are masked.

A secret's value is never sent to a browser: lists and details show a mask, and the edit form
starts empty ("leave blank to keep"); a blank value on save keeps the stored secret. Values are
neither searchable nor sortable (that would reveal them bit by bit).
"""

from __future__ import annotations

from flask_admin.form import BaseForm
from flask_admin.model.form import InlineFormAdmin
from markupsafe import Markup, escape
from wtforms import StringField
from wtforms.validators import ValidationError

from kirby import validation
from kirby.admin.base import KirbyForm, KirbyModelView
from kirby.admin.validators import env_key
from kirby.errors import InvalidValue
from kirby.models import ConfigKey, ConfigScope

MASK = "••••••••"
KEEP_HINT = "Secret: leave blank to keep the stored value."


class SecretValueField(StringField):
    """A value field that keeps the stored secret when submitted blank."""

    def populate_obj(self, obj, name) -> None:
        if not self.data and getattr(obj, "secret", False) and getattr(obj, "id", None) is not None:
            return
        setattr(obj, name, self.data or "")


class _SecretAware:
    def process(self, formdata=None, obj=None, data=None, extra_filters=None, **kwargs):
        super().process(formdata, obj, data=data, extra_filters=extra_filters, **kwargs)
        if obj is not None and getattr(obj, "secret", False) and "value" in self._fields:
            if not formdata:
                self.value.data = ""
            self.value.render_kw = {"placeholder": KEEP_HINT}


class SecretAwareForm(_SecretAware, BaseForm):
    """Base of inline config forms (the parent form carries the CSRF token)."""


class SecretAwareKirbyForm(_SecretAware, KirbyForm):
    """Base of the global config form."""


def masked_value(view, context, model, name) -> str:
    return MASK if model.secret else model.value


def config_summary(keys) -> Markup:
    """``KEY=value`` per line, secrets masked, escaped."""
    lines = [f"{k.key}={MASK if k.secret else k.value}" for k in sorted(keys, key=lambda k: k.key)]
    return Markup("<br>").join(escape(line) for line in lines)


def refuse_short_secret(model) -> None:
    """A secret too short to be masked in logs is refused with the reason (nothing is saved)."""
    if model.secret:
        try:
            validation.secret_value(model.value or "", model.key)
        except InvalidValue as exc:
            raise ValidationError(str(exc)) from None


class InlineConfig(InlineFormAdmin):
    """Config keys edited inside a job or a context form."""

    form_base_class = SecretAwareForm
    form_columns = ("id", "key", "value", "secret")
    form_args = {"key": {"validators": [env_key]}}

    def __init__(self, scope: ConfigScope):
        self.scope = scope
        super().__init__(ConfigKey)

    def postprocess_form(self, form_class):
        form_class.value = SecretValueField("Value")
        return form_class

    def on_model_change(self, form, model, is_created) -> None:
        refuse_short_secret(model)
        model.scope = self.scope
        if self.scope == ConfigScope.JOB:
            model.context_id = None
        if self.scope == ConfigScope.CONTEXT:
            model.job_id = None


class GlobalConfigView(KirbyModelView):
    form_base_class = SecretAwareKirbyForm
    column_list = ("key", "value", "secret")
    column_formatters = {"value": masked_value}
    column_searchable_list = ("key",)
    column_sortable_list = ("key", "secret")
    column_default_sort = "key"
    form_columns = ("key", "value", "secret")
    form_overrides = {"value": SecretValueField}
    form_args = {"key": {"validators": [env_key]}}

    def get_query(self):
        return super().get_query().filter(ConfigKey.scope == ConfigScope.GLOBAL)

    def get_count_query(self):
        return super().get_count_query().filter(ConfigKey.scope == ConfigScope.GLOBAL)

    def get_one(self, id):
        key = super().get_one(id)
        return key if key is not None and key.scope == ConfigScope.GLOBAL else None

    def on_model_change(self, form, model, is_created) -> None:
        refuse_short_secret(model)
        model.scope = ConfigScope.GLOBAL
        model.job_id = None
        model.context_id = None
