"""`kirby venvs list` and `kirby venvs gc` with the script database and the real pypiserver.

The group is invoked with the settings object, as kirby.cli's callback passes it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kirby.commands.venvs import venvs
from kirby.db import open_database
from kirby.models import Context, Environment, Job, JobType
from kirby.tasks.install import default_installer
from kirby.tasks.venvs import VenvCache

pytestmark = pytest.mark.pypi


@pytest.fixture
def setup(tmp_path, monkeypatch, make_settings, example_index):
    monkeypatch.chdir(tmp_path)
    env = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'kirby.db'}",
        "KIRBY_VENV_DIRECTORY": str(tmp_path / "venvs"),
        "KIRBY_PACKAGE_INDEX": example_index,
    }
    settings = make_settings(**env)
    database = open_database(settings)
    with database.session() as session:
        production = Environment(name="production")
        job = Job(name="hello", type=JobType.SCHEDULED)
        session.add_all(
            [
                production,
                job,
                Context(job=job, environment=production, package_name="kirby-example-hello", package_version="1.1.0"),
            ]
        )
    database.dispose()
    cache = VenvCache(settings.venv_directory, default_installer(example_index))
    return settings, cache


def test_list_shows_each_venv_and_whether_it_is_in_use(setup):
    settings, cache = setup
    assert "no venvs in" in CliRunner().invoke(venvs, ["list"], obj=settings).output
    cache.ensure("kirby-example-hello", "1.0.0")
    lease = cache.acquire("kirby-example-hello", "1.1.0")
    result = CliRunner().invoke(venvs, ["list"], obj=settings)
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert [(row[0], row[1], row[2], row[-1]) for row in rows] == [
        ("kirby-example-hello", "1.0.0", "3.11", "no"),
        ("kirby-example-hello", "1.1.0", "3.11", "yes"),
    ]
    lease.release()


def test_gc_keeps_versions_jobs_use_and_venvs_in_use(setup):
    settings, cache = setup
    old = cache.ensure("kirby-example-hello", "1.0.0")
    used = cache.ensure("kirby-example-hello", "1.1.0")
    lease = cache.acquire("kirby-example-fail", "1.0.0")
    dry = CliRunner().invoke(venvs, ["gc", "--dry-run"], obj=settings)
    assert dry.exit_code == 0, dry.output
    assert "would remove kirby-example-hello 1.0.0" in dry.output and old.exists()
    result = CliRunner().invoke(venvs, ["gc"], obj=settings)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("removed kirby-example-hello 1.0.0")
    assert "removed 1 venv(s)" in result.output
    assert not old.exists() and used.exists() and lease.path.exists()
    lease.release()
    result = CliRunner().invoke(venvs, ["gc"], obj=settings)
    assert "removed kirby-example-fail 1.0.0" in result.output and not lease.path.exists() and used.exists()
