"""Install wheels into an image's virtual environment staged under a host folder.

    python -m lightbox.devtools.wheelinstall --destdir DIR --venv /opt/venv --python 3.11 [--compile] WHEEL...

Run by the image builder in a child process whose PYTHONPATH holds the `installer` wheel, with
PYTHONHASHSEED=0 and SOURCE_DATE_EPOCH set: the bytecode is then the same on every build
(checked-hash .pyc files, no source mtimes, no hash-seed-dependent constant order). Uses pypa's
`installer` rather than pip because it writes console scripts for the image's interpreter
(``#!/opt/venv/bin/python``) without running anything inside the image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def scheme(venv: str, python: str) -> dict[str, str]:
    """The venv's install scheme (sysconfig ``venv``/``posix_prefix`` for a prefix of ``venv``)."""
    site = f"{venv}/lib/python{python}/site-packages"
    return {
        "purelib": site,
        "platlib": site,
        "headers": f"{venv}/include/site/python{python}",
        "scripts": f"{venv}/bin",
        "data": venv,
    }


def install(wheels: list[Path], destdir: Path, venv: str, python: str, compile_bytecode: bool) -> None:
    from installer import install as install_wheel
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    for wheel in wheels:
        paths = scheme(venv, python)
        destination = SchemeDictionaryDestination(
            paths | {"headers": f"{paths['headers']}/{wheel.name.split('-')[0]}"},
            interpreter=f"{venv}/bin/python",
            script_kind="posix",
            bytecode_optimization_levels=(0,) if compile_bytecode else (),
            destdir=str(destdir),
        )
        with WheelFile.open(wheel) as source:
            install_wheel(source, destination, additional_metadata={"INSTALLER": b"lightbox-images\n"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lightbox.devtools.wheelinstall")
    p.add_argument("--destdir", type=Path, required=True)
    p.add_argument("--venv", required=True)
    p.add_argument("--python", required=True, help="the image's Python minor version, e.g. 3.11")
    p.add_argument("--compile", action="store_true", help="write .pyc files (needs the same Python minor version here)")
    p.add_argument("wheels", nargs="+", type=Path)
    args = p.parse_args(argv)
    install(args.wheels, args.destdir, args.venv, args.python, args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
