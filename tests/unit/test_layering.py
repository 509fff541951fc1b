"""The import rules of ARCHITECTURE.md, checked on the source (every import, also inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kirby"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}


def _under(module: str, *prefixes: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def _offenders(importers: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in MODULES.items()
        if _under(module, *importers) and not _under(module, *allowed)
        for name in names
        if _under(name, *forbidden)
    )


ORM_AND_WEB = ("kirby.models", "kirby.db", "kirby.recorder", "kirby.web", "kirby.admin", "sqlalchemy", "flask")
BELOW_THE_WEB = (
    "kirby.supervisor",
    "kirby.bus",
    "kirby.lease",
    "kirby.tasks",
    "kirby.schedule",
    "kirby.cron",
    "kirby.events",
    "kirby.validation",
    "kirby.config",
    "kirby.config_values",
    "kirby.config_catalog",
)


def test_nothing_below_the_web_imports_the_orm_the_web_or_the_admin():
    # kirby.schedule.document builds the web's schedule document from the ORM; kirby.config
    # parses the database URL with SQLAlchemy's parser inside the one function that needs it.
    allowed = ("kirby.schedule.document",)
    found = _offenders(BELOW_THE_WEB, ORM_AND_WEB, allowed)
    assert found == [
        "kirby.config imports sqlalchemy.engine",
        "kirby.config imports sqlalchemy.engine.make_url",
        "kirby.config imports sqlalchemy.exc",
        "kirby.config imports sqlalchemy.exc.ArgumentError",
    ]


@pytest.mark.parametrize(
    "module", ["kirby.vocabulary", "kirby.run_ids", "kirby.clock", "kirby.errors", "kirby.hardening"]
)
def test_the_vocabulary_depends_on_nothing_of_kirby(module):
    assert sorted(name for name in MODULES[module] if _under(name, "kirby")) == []


def test_only_the_app_factory_mounts_the_admin():
    assert _offenders(("kirby.web",), ("kirby.admin",)) == [
        "kirby.web.app imports kirby.admin",
        "kirby.web.app imports kirby.admin.init_admin",
    ]
    assert _offenders(("kirby.admin",), ("kirby.web.app", "kirby.web.server")) == []


@pytest.mark.parametrize(
    "vendor, homes",
    [
        ("kafka", ("kirby.bus.kafka", "kirby.bus.kafka_topics")),
        ("redis", ("kirby.lease.redis",)),
        ("croniter", ("kirby.cron",)),
        ("waitress", ("kirby.web.server",)),
        ("ldap3", ("kirby.ldap_auth",)),
        ("authlib", ("kirby.web.oidc_login",)),
        ("joserfc", ("kirby.web.oidc_login",)),
    ],
)
def test_a_vendor_library_is_imported_only_by_its_backend(vendor, homes):
    assert _offenders(("kirby",), (vendor,), homes) == []


def test_importing_the_supervisor_loads_no_orm():
    code = (
        "import sys, kirby.supervisor.service, kirby.bus, kirby.lease, kirby.tasks.executor\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'flask', 'kirby.models', 'kirby.db') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_the_supervisor_command_loads_no_web_and_no_orm():
    """``kirby supervisor`` imports its own command only (an idle supervisor stays under 100 MB)."""
    code = (
        "import sys\nfrom kirby.cli import cli\nassert cli.get_command(None, 'supervisor') is not None\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'flask', 'kirby.models', 'kirby.db') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_every_command_module_is_named_in_the_cli_map():
    import importlib

    from kirby.cli import COMMAND_MODULES

    found = {}
    for path in sorted((PACKAGE / "commands").glob("*.py")):
        if path.stem != "__init__":
            for command in importlib.import_module(f"kirby.commands.{path.stem}").COMMANDS:
                found[command.name] = path.stem
    assert found == COMMAND_MODULES


@pytest.mark.parametrize("module", ["kirby.admin", "kirby.web.app", "kirby.web.server", "kirby.cli"])
def test_every_entry_module_imports_first_without_a_cycle(module):
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)


def test_architecture_md_names_every_module_and_package_of_the_tree():
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    top = sorted(
        p.stem if p.is_file() else p.name + "/"
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    )
    spellings = lambda name: {f"`{name}`", f"`{name.rstrip('/')}`", f"`{name}.py`"}  # noqa: E731
    missing = [name for name in top if not any(spelling in text for spelling in spellings(name))]
    assert missing == [], f"ARCHITECTURE.md does not place {missing}"
    named = {word.strip("`") for word in text.split() if word.startswith("`kirby/") and word.endswith(".py`")}
    assert sorted(p for p in named if not (PACKAGE.parent / p).exists()) == []


def test_celery_is_imported_only_by_the_celery_modules_that_talk_to_it():
    homes = ("kirby.celery.worker", "kirby.celery.sender", "kirby.celery.receiver", "kirby.celery.beat_import")
    assert _offenders(("kirby",), ("celery",), homes) == []
    assert _offenders(("kirby.celery",), ORM_AND_WEB) == []  # below the database layer
