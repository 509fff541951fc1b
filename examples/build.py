"""Build the example script packages' wheels into a folder (a local package index, or pypiserver's).

    python examples/build.py [--dest DIR]      # default DIR: examples/wheels

Importable: ``build_examples(dest) -> list[Path]``. Wheels already in ``dest`` are skipped. Each
package is copied to a temporary folder and built there with ``uv build --wheel``, so the source
tree stays clean; kirby-example-hello is built twice (1.0.0 and 1.1.0) from one tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
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
]


def wheel_name(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return str(beside)
    import uv

    return uv.find_uv_bin()


def build_one(package: str, version: str, dest: Path) -> Path:
    """Build ``package`` at ``version`` into ``dest`` (atomically: built aside, then moved in)."""
    target = dest / wheel_name(package, version)
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="kirby-example-") as temp:
        source = Path(temp) / package
        shutil.copytree(PACKAGES / package, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        out = Path(temp) / "out"
        env = {**os.environ, "KIRBY_EXAMPLE_VERSION": version}
        done = subprocess.run(
            [_uv(), "build", "--wheel", "--quiet", "--out-dir", str(out), str(source)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
        )
        built = out / target.name
        if done.returncode != 0 or not built.exists():
            raise RuntimeError(f"building {package} {version} failed:\n{done.stdout.decode(errors='replace')}")
        shutil.move(str(built), str(dest / f".{target.name}.part"))
        os.replace(dest / f".{target.name}.part", target)
    return target


def build_examples(dest: Path) -> list[Path]:
    """Build every example wheel into ``dest`` (created if needed); return the wheels' paths."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda example: build_one(*example, dest), EXAMPLES))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build Kirby's example wheels.")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="folder to put the wheels in")
    args = parser.parse_args(argv)
    for wheel in build_examples(args.dest):
        print(wheel)


if __name__ == "__main__":
    main()
