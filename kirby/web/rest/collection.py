"""One REST collection over one table, configured per resource (``resources``, ``jobs``): ``path``
lists the rows, ``path/<key>`` reads, creates or replaces, merge-patches and deletes one.

Every collection answers alike: a key with no row is 404 ``no <what> named 'x'; GET <path> lists
them`` (``no <what> 7`` for a numeric key); a body is validated by ``schema`` before anything is
written; a PATCH is the current reply with the request's merge patch applied, saved like a PUT.
Each ``*_view`` method registers one operation, endpoint ``<verb>_<name>``, in the order called
(which is the order of the OpenAPI document's operations). Auth and roles are the blueprint's
(``kirby.web.rest.base``), for every route alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import jsonify
from pydantic import BaseModel
from sqlalchemy import select

from kirby.web.rest.base import Conflict, NotFound, blueprint
from kirby.web.rest.registry import given, operation, patched, validated
from kirby.web.rest.schemas import Patch
from kirby.web.state import web_state


@dataclass(frozen=True)
class Collection:
    name: str  # in endpoints: list_<name>s, get_<name>, create_<name>, put_<name>, patch_<name>, delete_<name>
    path: str  # the list's URL rule: /api/environments
    key: str  # the member's URL variable: <name> (a row's ``name``), <int:suspension_id> (its primary key)
    what: str  # in messages: "notification group"
    model: type  # the ORM class of the rows
    schema: type[BaseModel]  # a member's body and reply
    reply: Callable[[Any], dict]  # a row as the API returns it
    find: Callable[[Any, Any], Any] | None = None  # (session, key) -> the row or None; default: by name or id
    listing: Callable[[], Any] | None = None  # the list's query (ordered), for ``list_view``
    items: str = ""  # the list reply's key, for ``list_view``
    save: Callable[[Collection, Any, dict], Any] | None = None  # (self, key or None for a POST, body) -> reply

    @property
    def member(self) -> str:
        return f"{self.path}/{self.key}"

    @property
    def named(self) -> bool:
        return self.key == "<name>"

    def one(self, session, key):
        """The row of ``key``; NotFound (404) when there is none."""
        if self.find is not None:
            row = self.find(session, key)
        elif self.named:
            row = session.scalar(select(self.model).where(self.model.name == key))
        else:
            row = session.get(self.model, key)
        if row is None:
            label = f"named {key!r}" if self.named else str(key)
            raise NotFound(f"no {self.what} {label}; GET {self.path} lists them")
        return row

    def list_view(self, summary: str, response: type[BaseModel]) -> None:
        def view():
            with web_state().database.session() as session:
                return jsonify({self.items: [self.reply(row) for row in session.scalars(self.listing())]})

        self._register(view, f"list_{self.name}s", self.path, "GET", summary, response=response)

    def create_view(self, summary: str) -> None:
        def view():
            return self.save(self, None, given(validated(self.schema)))

        self._register(
            view, f"create_{self.name}", self.path, "POST", summary, body=self.schema, response=self.schema, status=201
        )

    def get_view(self, summary: str) -> None:
        def view(**url):
            with web_state().database.session() as session:
                return jsonify(self.reply(self.one(session, _key(url))))

        self._register(view, f"get_{self.name}", self.member, "GET", summary, response=self.schema)

    def put_view(self, summary: str, creates: bool = True) -> None:
        """PUT saves the body at the key; ``creates=False``: a key with no row is 404 (before the body is read)."""

        def view(**url):
            key = _key(url)
            if not creates:
                with web_state().database.session() as session:
                    self.one(session, key)
            return self.save(self, key, given(validated(self.schema)))

        self._register(view, f"put_{self.name}", self.member, "PUT", summary, body=self.schema, response=self.schema)

    def patch_view(self, summary: str) -> None:
        def view(**url):
            key = _key(url)
            with web_state().database.session() as session:
                current = self.reply(self.one(session, key))
            return self.save(self, key, given(patched(self.schema, current)))

        self._register(view, f"patch_{self.name}", self.member, "PATCH", summary, body=Patch, response=self.schema)

    def delete_view(self, summary: str, in_use: Callable[[Any, Any], str | None] | None = None) -> None:
        """DELETE removes the row; ``in_use(session, row)``, when given, may refuse with a message (409)."""

        def view(**url):
            with web_state().database.session() as session:
                row = self.one(session, _key(url))
                refusal = in_use(session, row) if in_use else None
                if refusal:
                    raise Conflict(refusal)
                session.delete(row)
            return "", 204

        errors = {"errors": (400, 401, 403, 404, 409)} if in_use else {}
        self._register(view, f"delete_{self.name}", self.member, "DELETE", summary, status=204, **errors)

    @staticmethod
    def _register(view: Callable, endpoint: str, rule: str, method: str, summary: str, **details) -> None:
        view.__name__ = view.__qualname__ = endpoint
        operation(blueprint, rule, method, summary, **details)(view)


def _key(url: dict) -> Any:
    """The one variable of a member's URL (Flask passes it by its name in the rule)."""
    (key,) = url.values()
    return key
