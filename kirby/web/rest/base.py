"""The REST API's blueprint: auth for every route and the error replies (routes: ``jobs``,
``resources``, ``openapi``).

The REST API for scripts as code: jobs, environments, notification groups, suspensions, run
now, and its OpenAPI document. JSON in and out; one blueprint, registered by ``create_app``.

Auth on every route (``kirby.web.api_tokens``): the supervisors' token or an admin may do
anything; a viewer (token or session) may only GET. A session's writes need the
``X-CSRFToken`` header (token clients have no CSRF token: the blueprint is exempt from the
form-level check). Errors are ``{"error": one line, "path": where}`` with 400, 401, 403, 404 or 409.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError

from kirby.errors import DemoImportError, KirbyError
from kirby.web.api_tokens import Refused, request_caller
from kirby.web.rest.registry import BadBody
from kirby.web.security import api_error
from kirby.web.state import web_state

blueprint = Blueprint("rest", __name__)
READS = ("GET", "HEAD", "OPTIONS")


class NotFound(KirbyError):
    pass


class Conflict(KirbyError):
    pass


@blueprint.before_request
def _authorize():
    try:
        caller = request_caller(web_state())
    except Refused as exc:
        return api_error(exc.status, exc.message)
    if request.method not in READS:
        if not caller.is_admin:
            return api_error(403, f"{caller.name} has the viewer role: it may only read (GET); writes need admin")
        if not caller.token and current_app.config["WTF_CSRF_ENABLED"]:
            try:
                validate_csrf(request.headers.get("X-CSRFToken") or request.form.get("csrf_token"))
            except (ValidationError, CSRFError) as exc:
                return api_error(400, f"CSRF check failed: {exc}; send the X-CSRFToken header")
    g.kirby_caller = caller
    return None


def _error(status: int, exc: Exception, path: str | None = None):
    response = jsonify({"error": str(exc), "path": path} if path else {"error": str(exc)})
    response.status_code = status
    return response


@blueprint.errorhandler(BadBody)
def _bad_body(exc: BadBody):
    return _error(400, exc, exc.path)


@blueprint.errorhandler(DemoImportError)
def _bad_document(exc: DemoImportError):
    return _error(400, exc, exc.path or None)


@blueprint.errorhandler(NotFound)
def _not_found(exc: NotFound):
    return _error(404, exc)


@blueprint.errorhandler(Conflict)
def _conflict(exc: Conflict):
    return _error(409, exc)


@blueprint.errorhandler(KirbyError)
def _refused(exc: KirbyError):
    return _error(400, exc)
