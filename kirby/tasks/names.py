"""Validation of package names (PEP 508), versions (PEP 440) and module names, before any command.

Everything that reaches an installer's or interpreter's argument list passes through here first.
"""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from kirby.errors import PackageError

_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_package(name: str) -> str:
    """Return the canonical form of ``name`` (``Kirby_Example.Hello`` -> ``kirby-example-hello``).

    Raises PackageError if ``name`` is not a valid PEP 508 distribution name.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise PackageError(
            f"package name {name!r} is not a valid name: use letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (e.g. kirby-example-hello)"
        )
    return canonicalize_name(name)


def check_version(version: str) -> str:
    """Return the normalized form of an exact PEP 440 ``version`` (``1.0`` stays ``1.0``).

    Raises PackageError for anything else, such as a range (``>=1``) or an empty string.
    """
    try:
        return str(Version(version))
    except (InvalidVersion, TypeError):
        raise PackageError(f"version {version!r} is not a valid exact version: pin one release, e.g. 1.0.0") from None


def module_for(package: str, module: str = "") -> str:
    """The module run with ``python -m``: ``module`` if given, else derived from the package name.

    ``kirby-example-hello`` -> ``kirby_example_hello``. Raises PackageError for an invalid module.
    """
    chosen = module or check_package(package).replace("-", "_").replace(".", "_")
    if not _MODULE.match(chosen):
        raise PackageError(f"module {chosen!r} is not a valid Python module path: use e.g. my_script.main")
    return chosen


def venv_name(package: str, version: str, python: str) -> str:
    """Folder name of the venv of ``package==version`` for Python ``python`` (e.g. ``3.11``)."""
    return f"{check_package(package)}-{check_version(version)}-py{python}"
