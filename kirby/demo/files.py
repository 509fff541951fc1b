"""Import-format files in JSON or YAML: reading (for ``kirby apply``) and writing (``kirby export``).

YAML goes through PyYAML's safe loader (no Python objects), with two strictures matching the JSON
reader: a mapping that repeats a key is an error, and unquoted dates stay text (``starts_at:
2026-12-24T18:00:00+01:00`` is checked as the string it looks like). ``.yaml``/``.yml`` files are
YAML, anything else JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from sqlalchemy.exc import DBAPIError

from kirby.config import Settings
from kirby.db import Database
from kirby.demo.apply import Plan, apply_data
from kirby.demo.document import document
from kirby.demo.export import export_data
from kirby.demo.parse import parse
from kirby.demo.source import read, type_name
from kirby.demo.spec import DemoData
from kirby.errors import DemoImportError

_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class _StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps, refusing repeated keys."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise DemoImportError(
                    f"line {key_node.start_mark.line + 1}",
                    f"the key {key!r} appears twice in the same mapping; keep only one",
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DemoImportError(str(path), "no such file; give the path of a JSON or YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DemoImportError(str(path), f"cannot be read as UTF-8 text: {exc}") from None
    try:
        document = yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise DemoImportError(str(path), f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(document, dict):
        raise DemoImportError(
            str(path), f"the top level is {type_name(document)}; expected a mapping with ENVS and JOBS"
        )
    return document


def read_document(path: Path) -> dict:
    return read_yaml(path) if path.suffix.lower() in (".yaml", ".yml") else read(path)


def export_text(database: Database, fmt: str, with_secrets: bool) -> tuple[str, list[str]]:
    """The whole script database as JSON or YAML text, and the notes on what the format left out."""
    with database.session() as session:
        data = export_data(session)
    body = document(data, with_secrets)
    if fmt == "yaml":
        return yaml.safe_dump(body, sort_keys=False, allow_unicode=True), data.notes
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n", data.notes


def read_data(path: Path) -> DemoData:
    """Read and validate the JSON or YAML file at ``path`` (no database involved)."""
    return parse(read_document(path))


def apply_file(database: Database, settings: Settings, path: Path, prune: bool, dry_run: bool) -> Plan:
    """Validate ``path``, then apply it (see :func:`apply_checked`)."""
    return apply_checked(database, settings, read_data(path), prune, dry_run)


def apply_checked(database: Database, settings: Settings, data: DemoData, prune: bool, dry_run: bool) -> Plan:
    """Apply validated ``data`` in one transaction (rolled back when ``dry_run``)."""
    session = database.sessions()
    try:
        plan = apply_data(session, settings, data, prune)
        if dry_run:
            session.rollback()
        else:
            session.commit()
        return plan
    except DBAPIError as exc:
        session.rollback()
        raise DemoImportError("", f"the database refused the change: {exc.orig}") from None
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
