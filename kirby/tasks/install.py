"""Create a venv and install exactly ``package==version`` into it, isolated from outside pip config.

``uv`` (a Kirby dependency) is used when it can be found; otherwise ``python -m venv`` and pip.
Commands are argument lists; the installer's environment is built here from scratch, so no
``PIP_*`` or ``UV_*`` variable (or config file) of the supervisor's environment changes what it does.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kirby.errors import PackageError
from kirby.tasks.masking import Masker, index_credentials, redact_url
from kirby.tasks.names import check_package, check_version

log = logging.getLogger(__name__)

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
INSTALL_TIMEOUT = 900.0
_NOT_FOUND = (
    "not found in the package registr",  # uv
    "no version of",  # uv
    "not found in the provided package locations",  # uv, --find-links
    "no matching distribution found",  # pip
    "could not find a version that satisfies",  # pip
)
_UNREACHABLE = (
    "connection refused",
    "failed to establish a new connection",
    "tcp connect error",
    "name or service not known",
    "failed to resolve",
)


def home_directory() -> str:
    """The supervisor user's home, from the password database (not from the environment)."""
    return pwd.getpwuid(os.getuid()).pw_dir


def find_uv() -> str | None:
    """Path of the ``uv`` binary: next to this Python, else the uv package's, else None."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return None


def installer_environment() -> dict[str, str]:
    """A clean environment for installers: no inherited PIP_*/UV_* variables, no config files."""
    return {
        "PATH": SAFE_PATH,
        "HOME": home_directory(),
        "LANG": "C.UTF-8",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    }


def index_arguments(index: str) -> list[str]:
    """``--index-url URL`` for a URL; ``--no-index --find-links DIR`` for a local folder of wheels."""
    if "://" in index:
        return ["--index-url", index]
    return ["--no-index", "--find-links", index]


@dataclass(frozen=True)
class Installer:
    """Builds venvs with ``uv`` (``uv`` set) or with ``python -m venv`` + pip (``uv`` None)."""

    index: str = field(repr=False)  # may hold a password
    uv: str | None
    python: str = sys.executable

    @property
    def name(self) -> str:
        return "uv" if self.uv else "pip"

    @property
    def shown_index(self) -> str:
        """The index as messages and logs show it: without its password."""
        return redact_url(self.index)

    def _masked(self, output: str) -> str:
        """The installer's output without the index's credentials (it may print the URL)."""
        return Masker(index_credentials(self.index))(output)

    def build(self, venv: Path, package: str, version: str) -> str:
        """Create ``venv`` and install ``package==version``; return the installer's output.

        Raises PackageError with a clear message and the installer's output on failure.
        """
        requirement = f"{check_package(package)}=={check_version(version)}"
        log.info("building venv %s for %s with %s from %s", venv, requirement, self.name, self.shown_index)
        if self.uv:
            create = [self.uv, "venv", "--no-config", "--quiet", "--relocatable", "--python", self.python, str(venv)]
            install = [self.uv, "pip", "install", "--no-config", "--python", str(venv / "bin" / "python")]
        else:
            # The supervisor's own pip installs into the venv (``--python``): no ensurepip, faster.
            create = [self.python, "-m", "venv", "--without-pip", str(venv)]
            install = [
                self.python,
                "-m",
                "pip",
                "--python",
                str(venv / "bin" / "python"),
                "install",
                "--isolated",
                "--no-input",
                "--no-warn-script-location",
            ]
        install += [*index_arguments(self.index), requirement]
        output = self._run(create, requirement)
        return output + self._run(install, requirement)

    def _run(self, command: list[str], requirement: str) -> str:
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=installer_environment(),
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = self._masked((exc.output or b"").decode("utf-8", "replace"))
            raise PackageError(
                f"installing {requirement} took over {INSTALL_TIMEOUT:.0f} s: check the package index {self.shown_index}",
                output,
            ) from None
        output = self._masked(done.stdout.decode("utf-8", "replace"))
        if done.returncode != 0:
            raise PackageError(self._explain(requirement, output), output)
        return output

    def _explain(self, requirement: str, output: str) -> str:
        name, version = requirement.split("==")
        lowered = output.lower()
        if any(marker in lowered for marker in _UNREACHABLE):  # first: pip then also says "no matching"
            return f"the package index {self.shown_index} cannot be reached: start it or fix KIRBY_PACKAGE_INDEX"
        if any(marker in lowered for marker in _NOT_FOUND):
            return (
                f"package {name!r}=={version} is not on the package index {self.shown_index}: "
                "check the name and version, or upload it"
            )
        return f"could not install {requirement} from {self.shown_index} with {self.name}: see the installer's output"


def default_installer(index: str, python: str = sys.executable) -> Installer:
    """The uv installer when uv is found, else the venv + pip one; venvs of interpreter ``python``."""
    uv = find_uv()
    if uv is None:
        log.warning("uv not found: building venvs with python -m venv and pip (slower)")
    return Installer(index=index, uv=uv, python=python)


def remove_tree(path: Path) -> None:
    """Remove ``path`` (a venv or a leftover temporary folder) if it exists."""
    shutil.rmtree(path, ignore_errors=True)
