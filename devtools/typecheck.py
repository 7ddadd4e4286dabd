"""mypy over the installed package names, which the card's folders do not spell.

``operator/`` is imported as ``lightbox.operator`` (pyproject's ``package-dir``), so
``mypy operator`` would check it as the standard library's ``operator`` and ``mypy -p
lightbox.operator`` cannot follow setuptools' editable-install import hook. This runs mypy's
build with each file named by the module it is installed as, so per-module settings in
pyproject's ``[tool.mypy]`` (strict on ``lightbox.api.*`` and ``lightbox.operator.*``) apply,
and the errors name the files in the checkout. ``make lint`` runs it from the project's folder
(the one whose pyproject.toml it reads, like ruff and mypy themselves); exit status 1 on any error.
"""

from __future__ import annotations

import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Import package -> folder, from pyproject's ``[tool.setuptools] package-dir``."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {package: (pyproject.parent / folder).resolve() for package, folder in mapping.items()}


def module_sources(packages: Mapping[str, Path]) -> list[tuple[str, Path]]:
    """(module name, file) for every ``.py`` file, each under the package whose folder holds it.

    A folder mapped to a package of its own (``lightbox/operator`` is not one, but a nested
    mapping could be) is left to that package, so no file gets two names.
    """
    folders = set(packages.values())
    found: list[tuple[str, Path]] = []
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            if any(parent in folders and parent != folder for parent in path.parents):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join([package, *parts]), path))
    return found


def run(args: Sequence[str], root: Path) -> tuple[int, list[str]]:
    """Check the packages of ``root``; (exit status, messages with paths relative to root)."""
    sources = [
        BuildSource(str(path), module, None) for module, path in module_sources(package_dirs(root / "pyproject.toml"))
    ]
    _, options = process_options(["--config-file", str(root / "pyproject.toml"), *args], require_targets=False)
    options.cache_dir = str(root / options.cache_dir) if not os.path.isabs(options.cache_dir) else options.cache_dir
    messages: list[str] = []
    # mypy puts the working directory first on its search path: from the checkout, the folder
    # operator/ would answer `import operator`. An empty directory keeps it off.
    here = os.getcwd()
    empty = root / ".lightbox" / "typecheck-cwd"
    empty.mkdir(parents=True, exist_ok=True)
    os.chdir(empty)
    try:
        build.build(sources, options, flush_errors=lambda _file, new, _serious: messages.extend(new))
    except CompileError as error:
        messages.extend(error.messages)
    finally:
        os.chdir(here)
    prefix = f"{root}{os.sep}"
    shown = [message.replace(prefix, "") for message in messages]
    failed = any(": error:" in message for message in shown)
    return (1 if failed else 0), shown


def main(argv: Sequence[str] | None = None) -> int:
    status, messages = run(sys.argv[1:] if argv is None else argv, Path.cwd())
    for message in messages:
        print(message)
    print("typecheck: " + ("errors found" if status else "no errors"), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
