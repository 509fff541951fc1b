"""The REST API for scripts as code (``base``: the blueprint, auth and errors; ``schemas``: the
bodies; ``jobs``, ``resources``: the routes, configuring ``collection``'s list and member routes;
``openapi``: the document generated from them)."""

from kirby.web.rest import jobs, openapi, resources  # noqa: F401 - their routes join the blueprint
from kirby.web.rest.base import blueprint

__all__ = ["blueprint"]
