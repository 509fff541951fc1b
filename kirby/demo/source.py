"""Reading an import file: bytes -> UTF-8 text -> JSON document, and JSON paths for messages.

Every failure is a :class:`DemoImportError`. File-level problems carry the file name as their path;
problems inside the document carry the JSON path of the offending value (``JOBS.x.type``,
``USERS[0].role``). A JSON object that repeats a name is an error (``json`` would silently keep the
last value), reported with the path of the repeated name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kirby.errors import DemoImportError

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-/]+$")


def child(path: str, key: str | int) -> str:
    """The JSON path of ``key`` inside ``path``: ``a.b``, ``a[3]`` or ``a["odd key"]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


class _Object(dict):
    """A JSON object that remembers the names it saw twice (``json`` keeps only the last value)."""

    repeated: list[str]


def _object_hook(found: list):
    """An ``object_pairs_hook`` that builds _Object and appends to ``found`` each object with repeats."""

    def build(pairs: list[tuple[str, Any]]) -> _Object:
        result = _Object(pairs)
        result.repeated = []
        if len(result) != len(pairs):
            seen: set[str] = set()
            result.repeated = [key for key, _ in pairs if key in seen or seen.add(key)]
            found.append(result)
        return result

    return build


def _first_repeated(value: Any, path: str) -> str | None:
    """The path of the first repeated name in document order, or None. Iterative (no recursion limit)."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, _Object):
            if node.repeated:
                return child(where, node.repeated[0])
            stack.extend(reversed([(v, child(where, k)) for k, v in node.items()]))
        elif isinstance(node, list):
            stack.extend(reversed([(v, child(where, i)) for i, v in enumerate(node)]))
    return None


def decode(raw: bytes, name: str) -> Any:
    """Parse the bytes of file ``name`` into a JSON document (objects are plain dicts)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DemoImportError(
            name, f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise DemoImportError(name, "the file is empty; expected a JSON object with ENVS and JOBS")
    try:
        document = json.loads(text, object_pairs_hook=_object_hook(found := []))
    except json.JSONDecodeError as exc:
        raise DemoImportError(name, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise DemoImportError(name, "invalid JSON: nested too deeply") from None
    repeated = _first_repeated(document, "") if found else None  # the walk only when needed
    if repeated is not None:
        raise DemoImportError(repeated, "this name appears twice in the same JSON object; keep only one")
    if not isinstance(document, dict):
        raise DemoImportError(
            name, f"the top level is {type_name(document)}; expected a JSON object with ENVS and JOBS"
        )
    return document


def read(path: Path) -> Any:
    """Read and parse the import file at ``path``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DemoImportError(str(path), "no such file; give the path of a JSON file with --json_file_path") from None
    except IsADirectoryError:
        raise DemoImportError(str(path), "is a directory; give the path of a JSON file") from None
    except OSError as exc:
        raise DemoImportError(str(path), f"cannot be read: {exc.strerror}") from None
    return decode(raw, str(path))


def type_name(value: Any) -> str:
    """How a JSON value's type is named in messages: ``a string``, ``an object``, ``null``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
