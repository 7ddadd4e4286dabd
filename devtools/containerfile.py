"""The subset of Containerfile syntax that the daemonless image build interprets.

The Containerfiles under images/ are the documentation a region and a vendor read, and they
must build with docker/podman/buildah. The daemonless build reads the same files, so there is
one description of each image. It accepts only what it can reproduce faithfully and refuses the
rest by line number, instead of guessing:

* ``ARG NAME=default`` before ``FROM`` (values can be overridden by the builder)
* ``FROM ref`` (one stage)
* ``RUN`` of three known shapes: the base (``apt-get install ... python3 -m venv DIR``), a
  dependency install (``pip install ... -r /dist/requirements.txt``) and an application install
  (``pip install --no-deps /dist/NAME-*.whl``), optionally with ``--mount=type=bind``
* ``COPY src dst`` of files from the build context
* ``ENV``, ``USER``, ``WORKDIR``, ``ENTRYPOINT``/``CMD`` (exec form), ``LABEL``
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SUPPORTED = ("ARG", "FROM", "RUN", "COPY", "ENV", "USER", "WORKDIR", "ENTRYPOINT", "CMD", "LABEL")


class ContainerfileError(ValueError):
    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = str(path), line, message


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str  # after variable substitution
    line: int  # first line of the instruction


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations, drop comments and blank lines; keep each instruction's first line number."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are removed, as BuildKit does
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        out.append((start, " ".join(p for p in buf if p)))
        buf = []
    if buf:
        out.append((start, " ".join(p for p in buf if p)))
    return out


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _substitute(text: str, values: dict[str, str]) -> str:
    return _VAR.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def parse(text: str, path: Path | str = "Containerfile", build_args: dict[str, str] | None = None) -> list[Instruction]:
    """Instructions with ``ARG`` values substituted in ``FROM`` (ARGs may only precede FROM here)."""
    args: dict[str, str] = {}
    overrides = dict(build_args or {})
    result: list[Instruction] = []
    seen_from = False
    for line, content in logical_lines(text):
        keyword, _, rest = content.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword not in SUPPORTED:
            raise ContainerfileError(
                path, line, f"{keyword} is not supported by the daemonless build (allowed: {', '.join(SUPPORTED)})"
            )
        if keyword == "ARG":
            if seen_from:
                raise ContainerfileError(path, line, "ARG after FROM is not supported by the daemonless build")
            name, _, default = rest.partition("=")
            args[name.strip()] = overrides.pop(name.strip(), default.strip())
            continue
        if keyword == "FROM":
            if seen_from:
                raise ContainerfileError(
                    path, line, "one FROM per file: multi-stage builds are not supported by the daemonless build"
                )
            seen_from = True
            rest = _substitute(rest, args)
            if " " in rest:
                raise ContainerfileError(path, line, "FROM takes one image reference here (no AS, no --platform)")
        elif not seen_from:
            raise ContainerfileError(path, line, f"{keyword} before FROM")
        result.append(Instruction(keyword, rest, line))
    if overrides:
        raise ContainerfileError(path, 0, f"build arguments not declared with ARG: {', '.join(sorted(overrides))}")
    if not seen_from:
        raise ContainerfileError(path, 0, "no FROM")
    return result


def exec_form(ins: Instruction, path: Path | str) -> list[str]:
    """ENTRYPOINT/CMD must be JSON arrays of strings: the shell form needs a shell, which the images lack."""
    try:
        value = json.loads(ins.args)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ContainerfileError(
            path,
            ins.line,
            f"{ins.keyword} must be the exec form, a JSON array of strings (the image has no shell to run "
            f"{ins.args!r})",
        )
    return value


def key_values(ins: Instruction, path: Path | str) -> dict[str, str]:
    """ENV/LABEL ``k=v k2="v 2"`` (the legacy ``ENV k v`` form too)."""
    words = shlex.split(ins.args)
    if words and "=" not in words[0]:
        if len(words) < 2:
            raise ContainerfileError(path, ins.line, f"{ins.keyword} needs KEY=VALUE")
        return {words[0]: " ".join(words[1:])}
    out: dict[str, str] = {}
    for word in words:
        k, eq, v = word.partition("=")
        if not eq or not k:
            raise ContainerfileError(path, ins.line, f"{ins.keyword}: {word!r} is not KEY=VALUE")
        out[k] = v
    return out
