"""`kirby apply`, `kirby export` and `kirby token` as users run them: the real console script.

`kirby apply` round-trips the demo database (demo.json): apply it to an empty database, apply it
again (no changes), export as YAML, dry-run that (no changes), edit, apply with --prune, export.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kirby.demo import DEMO_FILE


@pytest.mark.slow
@pytest.mark.timeout(900)  # seven cold starts of the CLI on a loaded 2-core machine
def test_apply_round_trips_the_demo_database(kirby_cli, tmp_path: Path):
    created = kirby_cli("apply", str(DEMO_FILE)).stdout
    assert "created job hello" in created and "created environment prod" in created and "change(s) applied" in created
    assert kirby_cli("apply", str(DEMO_FILE)).stdout.strip() == f"no changes: the database matches {DEMO_FILE}"

    exported = tmp_path / "kirby.yaml"
    kirby_cli("export", "--format", "yaml", "--output", str(exported))
    document = yaml.safe_load(exported.read_text())
    assert document["ENV_VARS"]["GLOBAL"]["REPORTS_API_TOKEN"] == {"secret": True}  # no secret values
    assert "no changes" in kirby_cli("apply", "--dry-run", "--prune", str(exported)).stdout

    document["JOBS"]["hello"]["package_version"]["prod"] = "1.1.0"
    del document["JOBS"]["ticker"]
    exported.write_text(yaml.safe_dump(document))
    applied = kirby_cli("apply", "--prune", str(exported)).stdout
    assert "changed job hello (package_version)" in applied and "2 change(s) applied" in applied

    after = json.loads(kirby_cli("export").stdout)
    assert after["JOBS"]["hello"]["package_version"]["prod"] == "1.1.0" and "ticker" not in after["JOBS"]
    assert after == json.loads(json.dumps(document))  # the database is what the file says

    bad = kirby_cli("apply", str(tmp_path / "missing.json"), ok=False)
    assert bad.stderr.strip().count("\n") == 0 and "no such file" in bad.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_token_create_list_revoke(kirby_cli):
    created = kirby_cli("token", "create", "ci", "--role", "viewer", "--expires", "30d")
    token = created.stdout.strip()
    assert token.startswith("kirby_") and len(token) > 40 and "not shown again" in created.stderr
    listing = kirby_cli("token", "list").stdout
    assert "ci\tviewer\tactive" in listing and token not in listing
    refused = kirby_cli("token", "create", "x", "--role", "admin", "--expires", "soon", ok=False)
    assert "is not a duration" in refused.stderr
    kirby_cli("token", "revoke", "ci")
    assert "ci\tviewer\trevoked" in kirby_cli("token", "list").stdout
