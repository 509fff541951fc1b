"""Build the example script packages' wheels into a folder (a local package index, or pypiserver's).

    python examples/build.py [--dest DIR]      # default DIR: examples/wheels

Importable: ``build_examples(dest) -> list[Path]``. Wheels already in ``dest`` are skipped.
kirby-example-hello is built twice (1.0.0 and 1.1.0) from one source tree; its setup.py reads
KIRBY_EXAMPLE_VERSION when built by a standard tool, and this builder passes the version directly.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import tomllib
import zipfile
from pathlib import Path

PACKAGES = Path(__file__).resolve().parent / "packages"
DEFAULT_DEST = Path(__file__).resolve().parent / "wheels"
# (distribution name, version); versions must match the sources (hello's comes from the build).
EXAMPLES = [
    ("kirby-example-hello", "1.0.0"),
    ("kirby-example-hello", "1.1.0"),
    ("kirby-example-fail", "1.0.0"),
    ("kirby-example-sleep", "1.0.0"),
    ("kirby-example-forker", "1.0.0"),
    ("kirby-example-daemon", "1.0.0"),
    ("kirby-example-chatty", "1.0.0"),
    ("kirby-example-prober", "1.0.0"),
    ("kirby-example-stint", "1.0.0"),
]


def wheel_name(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest},{len(data)}"


def build_one(package: str, version: str, dest: Path) -> Path:
    """Write the pure-Python wheel of ``package`` at ``version`` into ``dest`` (atomically).

    The examples are one top-level package each, with no dependencies, so the wheel is written
    directly (zip + METADATA/WHEEL/RECORD): fast and offline. ``pip wheel`` or ``uv build`` on the
    same folder (setuptools) gives an equivalent wheel.
    """
    target = dest / wheel_name(package, version)
    if target.exists():
        return target
    source = PACKAGES / package
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    module = package.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted((source / module).rglob("*.py")):
        files[f"{module}/{path.relative_to(source / module).as_posix()}"] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        f"Summary: {project.get('description', '')}\nRequires-Python: {project.get('requires-python', '>=3.8')}\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: kirby-examples\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = "".join(f"{name},{_record_hash(data)}\n" for name, data in files.items()) + f"{dist_info}/RECORD,,\n"
    files[f"{dist_info}/RECORD"] = record.encode()
    partial = dest / f".{target.name}.{os.getpid()}.part"
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            wheel.writestr(info, data, zipfile.ZIP_DEFLATED)
    os.replace(partial, target)
    return target


def build_examples(dest: Path) -> list[Path]:
    """Build every example wheel into ``dest`` (created if needed); return the wheels' paths."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return [build_one(package, version, dest) for package, version in EXAMPLES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build Kirby's example wheels.")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="folder to put the wheels in")
    args = parser.parse_args(argv)
    for wheel in build_examples(args.dest):
        print(wheel)


if __name__ == "__main__":
    main()
