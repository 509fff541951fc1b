"""Local users (kirby.users) and the `kirby adduser` dialogue through click's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from kirby.cli import cli
from kirby.config import load_settings
from kirby.db import open_database
from kirby.errors import UserError
from kirby.models import Role, User
from kirby.users import add_user, authenticate, hash_password, verify_password

# --- kirby.users -----------------------------------------------------------------------------


def test_hash_is_salted_peppered_and_verifiable(make_settings):
    settings = make_settings(SECURITY_PASSWORD_SALT="pepper-1")
    first, second = hash_password("s3cret-passphrase", settings), hash_password("s3cret-passphrase", settings)
    assert first != second and "s3cret-passphrase" not in first  # a random salt per hash
    assert first.startswith("scrypt:")
    assert verify_password(first, "s3cret-passphrase", settings)
    assert not verify_password(first, "S3cret-passphrase", settings)
    assert not verify_password(first, "s3cret-passphrase", make_settings(SECURITY_PASSWORD_SALT="pepper-2"))
    assert not verify_password("not a hash", "s3cret-passphrase", settings)


def test_add_user_and_authenticate(db, make_settings):
    settings = make_settings()
    with db.session() as session:
        alice = add_user(session, settings, "alice", "s3cret-passphrase", admin=True)
        add_user(session, settings, "victor", "v1ew-passphrase", admin=False)
    assert alice.role == Role.ADMIN and alice.active
    with db.session() as session:
        assert authenticate(session, settings, "alice", "s3cret-passphrase").username == "alice"
        assert authenticate(session, settings, "victor", "v1ew-passphrase").role == Role.VIEWER
        assert authenticate(session, settings, "alice", "wrong") is None
        assert authenticate(session, settings, "nobody", "s3cret-passphrase") is None
        assert authenticate(session, settings, "", "") is None
        session.scalars(select(User).where(User.username == "victor")).one().active = False
    with db.session() as session:
        assert authenticate(session, settings, "victor", "v1ew-passphrase") is None  # inactive users are refused


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("alice", "other-passphrase", "user 'alice' already exists; choose another name"),
        ("ALICE", "other-passphrase", "user 'ALICE' already exists; choose another name"),
        ("bob", "", "refusing an empty password for user 'bob'"),
        ("bob", "elevenchars", "refusing a password of 11 characters for user 'bob': use at least 12 characters"),
        ("bad name", "pw", "'bad name' is not a valid user name"),
        ("", "pw", "'' is not a valid user name"),
        ("-x", "pw", "'-x' is not a valid user name"),
    ],
)
def test_add_user_refusals_change_nothing(db, make_settings, username, password, message):
    settings = make_settings()
    with db.session() as session:
        original = add_user(session, settings, "alice", "s3cret-passphrase", admin=False).password_hash
    with pytest.raises(UserError, match=message):
        with db.session() as session:
            add_user(session, settings, username, password, admin=True)
    with db.session() as session:
        users = session.scalars(select(User)).all()
        assert [(u.username, u.password_hash, u.role) for u in users] == [("alice", original, Role.VIEWER)]


# --- kirby adduser ---------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path, monkeypatch):
    """Invoke `kirby ...` in tmp_path (no stray .env) against a database file there."""
    monkeypatch.chdir(tmp_path)
    env = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'kirby.db'}", "SECURITY_PASSWORD_SALT": "pepper"}

    def invoke(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, list(args), input=input, env=env)

    invoke.settings = load_settings(environ=env, cwd=tmp_path)
    return invoke


def users(settings) -> dict[str, User]:
    database = open_database(settings)
    try:
        with database.session() as session:
            return {u.username: u for u in session.scalars(select(User))}
    finally:
        database.dispose()


def test_adduser_dialogue_admin(run):
    result = run("adduser", "alice", input="s3cret-passphrase\ns3cret-passphrase\ny\n")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "Password: \nRepeat for confirmation: \nGive admin rights? [y/N]: y\nUser alice added with admin rights\n"
    )
    alice = users(run.settings)["alice"]
    assert alice.role == Role.ADMIN and alice.active
    assert verify_password(alice.password_hash, "s3cret-passphrase", run.settings)


def test_adduser_dialogue_viewer_by_default(run):
    result = run("adduser", "victor", input="pw-twelve-chars\npw-twelve-chars\n\n")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("Give admin rights? [y/N]: \nUser victor added with viewer rights\n")
    assert users(run.settings)["victor"].role == Role.VIEWER


def test_adduser_flag_skips_the_question(run):
    result = run("adduser", "carol", "--no-admin", input="pw-twelve-chars\npw-twelve-chars\n")
    assert result.exit_code == 0, result.output
    assert "Give admin rights" not in result.output
    assert result.output.endswith("User carol added with viewer rights\n")


def test_adduser_password_stdin(run):
    result = run("adduser", "robot", "--password-stdin", "--admin", input="from-stdin-passphrase\nsecond line\n")
    assert result.exit_code == 0, result.output
    assert result.output == "User robot added with admin rights\n"  # no prompt at all
    robot = users(run.settings)["robot"]
    assert robot.role == Role.ADMIN
    assert verify_password(robot.password_hash, "from-stdin-passphrase", run.settings)
    result = run("adduser", "viewer-bot", "--password-stdin", input="pw-twelve-chars")  # no newline at the end
    assert result.output == "User viewer-bot added with viewer rights\n"
    assert verify_password(users(run.settings)["viewer-bot"].password_hash, "pw-twelve-chars", run.settings)


def test_adduser_existing_name_is_an_error_never_an_overwrite(run):
    assert run("adduser", "alice", "--password-stdin", input="first-passphrase\n").exit_code == 0
    before = users(run.settings)["alice"].password_hash
    for name in ("alice", "Alice"):
        result = run("adduser", name, "--password-stdin", "--admin", input="second-passphrase\n")
        assert result.exit_code == 1
        assert result.output == f"Error: user {name!r} already exists; choose another name\n"
    interactive = run("adduser", "alice", input="x\nx\ny\n")
    assert interactive.output == "Error: user 'alice' already exists; choose another name\n"  # asked nothing
    after = users(run.settings)
    assert list(after) == ["alice"] and after["alice"].password_hash == before
    assert after["alice"].role == Role.VIEWER


@pytest.mark.parametrize(("args", "stdin"), [((), "\n\n"), (("--password-stdin",), "\n"), (("--password-stdin",), "")])
def test_adduser_refuses_an_empty_password(run, args, stdin):
    result = run("adduser", "alice", *args, input=stdin)
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "Error: refusing an empty password for user 'alice'; choose a password"
    assert "Traceback" not in result.output
    assert users(run.settings) == {}


@pytest.mark.parametrize(("args", "stdin"), [((), "short-pw\nshort-pw\n"), (("--password-stdin",), "eleven-char\n")])
def test_adduser_refuses_a_short_password_before_asking_for_rights(run, args, stdin):
    result = run("adduser", "alice", *args, input=stdin)
    assert result.exit_code == 1
    length = len(stdin.split("\n")[0])
    assert result.output.splitlines()[-1] == (
        f"Error: refusing a password of {length} characters for user 'alice': use at least 12 characters"
    )
    assert "admin rights" not in result.output and users(run.settings) == {}


def test_adduser_wrong_confirmation_asks_again(run):
    result = run("adduser", "alice", input="one-passphrase\ntwo-passphrase\n")
    assert result.exit_code == 1
    assert "Error: The two entered values do not match." in result.output
    assert result.output.endswith("Aborted!\n")
    assert users(run.settings) == {}
    result = run("adduser", "alice", input="one-passphrase\ntwo-passphrase\nthree-passphrase\nthree-passphrase\nn\n")
    assert result.exit_code == 0, result.output
    assert verify_password(users(run.settings)["alice"].password_hash, "three-passphrase", run.settings)


def test_adduser_bad_name(run):
    result = run("adduser", "bad name", input="pw\npw\n")
    assert result.exit_code == 1
    assert result.output.startswith("Error: 'bad name' is not a valid user name")
    assert "Password" not in result.output
