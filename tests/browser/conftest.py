"""Browser tests: a real ``kirby web`` subprocess on 127.0.0.1 (free port, own database and embedded
backends), driven by Playwright through Debian's Chromium. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from helpers import wait_for

from kirby.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser-test-password"
TOKEN = "browser-test-token"
KIRBY = Path(sys.executable).with_name("kirby")


@dataclass
class KirbyWeb:
    url: str
    env: dict[str, str]
    directory: Path
    settings: Settings
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kirby(env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(KIRBY), *args], input=stdin, text=True, capture_output=True, env=env, cwd=cwd, timeout=120, check=True
    )


def start_kirby_web(directory: Path, port: int | None = None, **extra: str) -> KirbyWeb:
    """Users alice (admin) and victor (viewer), then `kirby web` on ``port`` (default: a free one);
    waits for /healthz."""
    variables = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{directory / 'kirby.db'}",
        "KIRBY_EMBEDDED_PATH": str(directory / "embedded.db"),
        "KIRBY_VENV_DIRECTORY": str(directory / "venvs"),
        "KIRBY_RUN_DIRECTORY": str(directory / "runs"),
        "SECRET_KEY": "browser-test-secret-key",
        "KIRBY_API_TOKEN": TOKEN,
        "KIRBY_ALLOW_ROOT_RUNS": "true",  # CI runs as root; isolation is tested in tests/e2e/test_isolation.py
        **extra,
    }
    env = {**os.environ, **variables}
    kirby(env, directory, "adduser", "alice", "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    kirby(env, directory, "adduser", "victor", "--no-admin", "--password-stdin", stdin=PASSWORD + "\n")
    port = port or free_port()
    env["KIRBY_SCHEDULE_ENDPOINT"] = f"http://127.0.0.1:{port}/schedule"
    with open(directory / "web.log", "wb") as log:
        process = subprocess.Popen(
            [str(KIRBY), "web", "--port", str(port)],
            env=env,
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, f"kirby web exited: {(directory / 'web.log').read_text()}"
        try:
            return requests.get(f"{url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return False

    wait_for(healthy, 60, f"kirby web did not answer on {url}/healthz")
    return KirbyWeb(url, env, directory, load_settings(environ=variables, cwd=directory), process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def kirby_web(tmp_path_factory) -> KirbyWeb:
    web = start_kirby_web(tmp_path_factory.mktemp("kirby-web"))
    yield web
    stop(web.process)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y chromium chromium-driver (scripts/bootstrap --test does it)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    dialogs: list[str] = []
    page.on(
        "dialog",
        lambda dialog: (
            dialogs.append(f"{dialog.type}: {dialog.message}"),
            dialog.accept() if dialog.type == "confirm" else dialog.dismiss(),
        ),
    )
    page.dialogs = dialogs
    # CSP violations other than javascript:void(0) links (harmless no-ops blocked by the policy)
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text)
            if ("Content Security Policy" in message.text and "javascript url" not in message.text.lower())
            else None
        ),
    )
    page.csp_violations = violations
    yield page
    context.close()


def log_in(page, kirby_web: KirbyWeb, username: str) -> None:
    page.goto(f"{kirby_web.url}/login")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login")
    page.wait_for_url(f"{kirby_web.url}/admin/")


def screenshot(page, name: str, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)
