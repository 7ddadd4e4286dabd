"""Lightbox's own images, built without a daemon or a registry.

    python -m lightbox.devtools.images build [NAME...]   # prints REF@DIGEST per image (archives on stderr)
    python -m lightbox.devtools.images list
    python -m lightbox.devtools.images context [DIR]     # dist/ for docker/podman/buildah build

The Containerfiles under images/ describe each image; this module reads them (the subset in
``devtools/containerfile.py``) and builds the same image without a daemon:

* base layer: ``mmdebstrap --variant=minbase`` of the Debian suite named by FROM with the
  ``apt-get install`` packages of the first RUN, whose other commands (the venv, the user) run in
  the new root; from the apt sources already configured on the machine (slow, ~3 min; cached
  apart, it changes rarely);
* dependency layer: the ``-r /dist/requirements.txt`` install, the wheels pinned to the versions
  installed here (what the tests ran with), downloaded with ``pip download --only-binary=:all:``;
* application layer: the Lightbox wheel built from this checkout (changes every commit);
* small layers for ``COPY`` (a reference algorithm's ``algorithm.json``).

Wheels are installed with pypa's ``installer`` where the Containerfile runs pip: the files of
each package are the wheel's, byte for byte, in the same places; only the dist-info bookkeeping
(INSTALLER, RECORD's list of .pyc files) differs.

Layers and images are reproducible (sorted tar entries, fixed mtimes and owners, no timestamps
in the config), so the same inputs give the same manifest digest, and are cached by a hash of
their inputs under ``${LIGHTBOX_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/lightbox}/images/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightbox.devtools import oci
from lightbox.devtools.containerfile import ContainerfileError, Instruction, exec_form, key_values, parse

# Bump when the build logic changes what a cached layer holds.
BUILDER_VERSION = "1"
# 2024-01-01T00:00:00Z: every file's mtime in a layer (and the wheel's zip entries).
DEFAULT_EPOCH = 1704067200
REGISTRY = "localhost"
INSTALLER_REQUIREMENT = "installer==1.1.0"
# The packages and folders that make up the Lightbox wheel (pyproject's package-dir).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "lightbox", "operator", "sandbox", "devtools")
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
ARCHIVES_KEPT = 2

# Short name -> Containerfile (relative to the repository root). The repository of each image is
# localhost/lightbox for the first and localhost/lightbox-reference-NAME for the others.
IMAGES: dict[str, str] = {
    "lightbox": "images/lightbox/Containerfile",
    "classifier": "images/reference/classifier/Containerfile",
    "segmenter": "images/reference/segmenter/Containerfile",
    "detector": "images/reference/detector/Containerfile",
    "misbehave": "images/reference/misbehave/Containerfile",
}

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    name: str  # "lightbox", "classifier", ...
    ref: str  # "localhost/lightbox:0.1.0"
    digest: str  # sha256:... of the manifest, as containerd and the kubelet report it
    archive: Path  # OCI layout tar: `ctr -n k8s.io images import --base-name REPO FILE`, skopeo `oci-archive:FILE`

    @property
    def repository(self) -> str:
        return self.ref.rpartition(":")[0]

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    from lightbox.devtools.binaries import cache_root

    return cache_root() / "images"


def version(root: Path | None = None) -> str:
    return str(tomllib.loads(((root or repo_root()) / "pyproject.toml").read_text())["project"]["version"])


def repository(name: str) -> str:
    return f"{REGISTRY}/lightbox" if name == "lightbox" else f"{REGISTRY}/lightbox-reference-{name}"


def _hash(value: Any) -> str:
    return hashlib.sha256(oci.canonical_json(value)).hexdigest()


# --- the plan: what a Containerfile asks for ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    kind: str  # "requirements" | "wheel" | "copy"
    line: int
    source: str = ""  # copy: path in the build context
    dest: str = ""  # copy: absolute path in the image
    project: str = ""  # wheel: distribution name


@dataclasses.dataclass
class Plan:
    name: str
    path: Path
    parent: str | None = None  # one of IMAGES when FROM names an image built here
    suite: str | None = None  # Debian suite when FROM is a Debian image
    apt_packages: tuple[str, ...] = ()
    base_commands: tuple[str, ...] = ()  # the base RUN's other commands, run in the new root file system
    venv: str | None = None
    steps: list[Step] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    labels: dict[str, str] = dataclasses.field(default_factory=dict)


_DEBIAN = re.compile(r"^(?:docker\.io/)?(?:library/)?debian:([a-z]+)(?:-slim)?$")
_MOUNT = re.compile(r"--mount=(\S+)")
_VENV = re.compile(r"python3 -m venv (?:--without-pip )?(/\S+)")


def _mounts(args: str) -> dict[str, str]:
    """``--mount=type=bind,source=dist,target=/dist`` -> {"/dist": "dist"}."""
    out = {}
    for m in _MOUNT.finditer(args):
        fields = dict(part.partition("=")[::2] for part in m.group(1).split(","))
        if fields.get("type", "bind") != "bind":
            raise ValueError(f"only bind mounts are understood, not {m.group(0)}")
        out[fields.get("target") or fields.get("dst") or ""] = fields.get("source") or fields.get("src") or "."
    return out


def split_base_run(args: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(packages of its apt-get install, its other commands): mmdebstrap installs the former and runs the
    latter in the new root, where docker would run the whole line in ``debian:<suite>-slim``."""
    packages: list[str] = []
    commands: list[str] = []
    for command in (c.strip() for c in args.split("&&")):
        words = command.split()
        if words[:1] == ["apt-get"]:
            if "install" in words:
                packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
        elif command != "rm -rf /var/lib/apt/lists/*":  # mmdebstrap removes the package lists itself
            commands.append(command)
    return tuple(packages), tuple(commands)


def plan_image(name: str, root: Path, image_version: str) -> Plan:
    rel = IMAGES.get(name)
    if rel is None:
        raise ImageBuildError(f"unknown image {name!r}; known: {', '.join(IMAGES)}")
    path = root / rel
    text = path.read_text()
    build_args = {"LIGHTBOX_IMAGE": f"{repository('lightbox')}:{image_version}"} if "ARG LIGHTBOX_IMAGE" in text else {}
    plan = Plan(name, path)
    for ins in parse(text, rel, build_args):
        _apply(plan, ins, rel, image_version)
    if plan.parent is None and plan.venv is None:
        raise ContainerfileError(rel, 0, "a Debian base needs a first RUN with apt-get install and python3 -m venv DIR")
    return plan


def _apply(plan: Plan, ins: Instruction, rel: str, image_version: str) -> None:
    k, a = ins.keyword, ins.args
    if k == "FROM":
        debian = _DEBIAN.match(a)
        ours = {f"{repository(n)}:{image_version}": n for n in IMAGES}
        if debian:
            plan.suite = debian.group(1)
            if plan.suite not in SUITE_PYTHON:
                raise ContainerfileError(rel, ins.line, f"Debian suite {plan.suite!r}: known {', '.join(SUITE_PYTHON)}")
        elif a in ours and ours[a] != plan.name:
            plan.parent = ours[a]
        else:
            raise ContainerfileError(
                rel,
                ins.line,
                f"FROM {a}: the daemonless build starts from debian:<suite>[-slim] or one of {', '.join(ours)}",
            )
    elif k == "RUN":
        try:
            mounts = _mounts(a)
        except ValueError as exc:
            raise ContainerfileError(rel, ins.line, str(exc)) from exc
        body = _MOUNT.sub("", a).strip()
        if "apt-get" in body and plan.suite is not None and plan.venv is None and not plan.steps:
            venv = _VENV.search(body)
            if venv is None:
                raise ContainerfileError(rel, ins.line, "the base RUN must end with `python3 -m venv DIR`")
            plan.apt_packages, plan.base_commands = split_base_run(body)
            plan.venv = venv.group(1)
        elif " install " in f" {body} " and re.search(r"\bpip(\.whl/pip)?\b", body):
            req = re.search(r"-r\s+(/\S+)", body)
            wheel = re.search(r"/\S+/([A-Za-z0-9_.]+)-\*\.whl", body)
            if req and req.group(1).rpartition("/")[0] in mounts and req.group(1).endswith("/requirements.txt"):
                plan.steps.append(Step("requirements", ins.line))
            elif wheel and "--no-deps" in body:
                plan.steps.append(Step("wheel", ins.line, project=wheel.group(1)))
            else:
                raise ContainerfileError(
                    rel,
                    ins.line,
                    "pip install is understood as `-r /MOUNT/requirements.txt` or `--no-deps /MOUNT/NAME-*.whl`",
                )
        else:
            raise ContainerfileError(
                rel,
                ins.line,
                f"RUN {body[:60]!r} is not one the daemonless build can reproduce (see devtools/containerfile.py)",
            )
    elif k == "COPY":
        words = a.split()
        if len(words) != 2 or words[0].startswith("--") or not words[1].startswith("/"):
            raise ContainerfileError(rel, ins.line, "COPY takes one context file and an absolute destination here")
        plan.steps.append(Step("copy", ins.line, source=words[0], dest=words[1]))
    elif k == "ENV":
        plan.env.update(key_values(ins, rel))
    elif k == "LABEL":
        plan.labels.update(key_values(ins, rel))
    elif k == "USER":
        plan.user = a
    elif k == "WORKDIR":
        plan.workdir = a
    elif k == "ENTRYPOINT":
        plan.entrypoint = exec_form(ins, rel)
        plan.cmd = None  # as docker: a new ENTRYPOINT resets the inherited CMD
    elif k == "CMD":
        plan.cmd = exec_form(ins, rel)


# --- progress ------------------------------------------------------------------------------


class Progress:
    """One line per step with the elapsed time and where its log is."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.start = time.monotonic()

    @contextlib.contextmanager
    def step(self, what: str, log_path: Path | None = None) -> Iterator[None]:
        t0 = time.monotonic()
        self.log(f"[images {t0 - self.start:6.1f}s] {what}" + (f" (log: {log_path})" if log_path else ""))
        yield
        self.log(f"[images {time.monotonic() - self.start:6.1f}s] {what}: done in {time.monotonic() - t0:.1f} s")


def _run(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as fh:
        fh.write(("$ " + " ".join(argv) + "\n").encode())
        fh.flush()
        done = subprocess.run(
            list(argv), stdout=fh, stderr=subprocess.STDOUT, env=dict(env) if env is not None else None, cwd=cwd
        )
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise ImageBuildError(f"`{' '.join(argv[:3])} ...` exited {done.returncode}; log {log_path}:\n{tail}")


@contextlib.contextmanager
def _lock(cache: Path, key: str) -> Iterator[None]:
    locks = cache / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{key}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- inputs: the Lightbox wheel and its pinned dependencies ---------------------------------


def source_files(root: Path) -> list[Path]:
    """What goes into the Lightbox wheel (bytecode caches and build leftovers excluded)."""
    files: list[Path] = []
    for top in WHEEL_SOURCES:
        p = root / top
        if p.is_file():
            files.append(p)
            continue
        for f in sorted(p.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo"):
                files.append(f)
    return files


def source_hash(root: Path) -> str:
    h = hashlib.sha256()
    for f in source_files(root):
        rel = f.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def build_wheel(root: Path, out_dir: Path, epoch: int, log_path: Path) -> Path:
    """The Lightbox wheel from a copy of its sources (the checkout gets no build/ or egg-info)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lightbox-wheel-") as tmp:
        src = Path(tmp) / "src"
        for f in source_files(root):
            dst = src / f.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                str(Path(tmp) / "w"),
                str(src),
            ],
            log_path,
            env,
        )
        wheels = list((Path(tmp) / "w").glob("lightbox-*.whl"))
        if len(wheels) != 1:
            raise ImageBuildError(f"expected one lightbox wheel, found {[w.name for w in wheels]}")
        final = out_dir / wheels[0].name
        shutil.move(str(wheels[0]), final)
        return final


def pinned_requirements(root: Path) -> list[str]:
    """The runtime dependencies of pyproject.toml and theirs, at the versions installed here.

    The image then runs what the test suite ran with; a dependency missing here is an error
    naming it, not a silent newer download.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pending = [Requirement(r) for r in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]]
    pins: dict[str, str] = {}
    while pending:
        req = pending.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError as exc:
            raise ImageBuildError(
                f"dependency {req.name} is not installed in {sys.prefix}: `pip install -e .` first"
            ) from exc
        if not req.specifier.contains(dist.version, prereleases=True):
            raise ImageBuildError(f"installed {req.name} {dist.version} does not satisfy {req}")
        pins[key] = dist.version
        pending += [Requirement(r) for r in dist.requires or []]
    return [f"{name}=={pins[name]}" for name in sorted(pins)]


def _pip_target_flags(python: str) -> list[str]:
    """Wheels for the image's Python when it is not the one running this."""
    if python == f"{sys.version_info[0]}.{sys.version_info[1]}":
        return []
    tag = python.replace(".", "")
    return ["--python-version", python, "--implementation", "cp", "--abi", f"cp{tag}",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64"]


def download_wheels(requirements: Sequence[str], dest: Path, python: str, log_path: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps", "-d", str(dest),
          *_pip_target_flags(python), *requirements], log_path)
    return sorted(dest.glob("*.whl"))


# --- layers --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    root: Path
    cache: Path
    epoch: int
    version: str
    log: Log


def _layer_record(cache: Path, kind: str, key: str) -> Path:
    return cache / "layers" / f"{kind}-{key}.json"


def cached_layer(
    s: Settings,
    progress: Progress,
    kind: str,
    inputs: Any,
    what: str,
    make: Callable[[Path, Path], tuple[Path, oci.Layer]],
) -> oci.Layer:
    """The layer for ``inputs`` from the cache, or made by ``make(work_dir, log_path)`` and stored."""
    key = _hash({"builder": BUILDER_VERSION, "kind": kind, "epoch": s.epoch, "inputs": inputs})
    record = _layer_record(s.cache, kind, key)
    store = oci.BlobStore(s.cache / "blobs")
    with _lock(s.cache, f"{kind}-{key}"):
        if record.is_file():
            doc = json.loads(record.read_text())
            layer = oci.Layer(oci.Blob(doc["digest"], doc["size"], oci.MEDIA_LAYER_GZIP), doc["diffId"])
            if store.path(layer.blob.digest).is_file():
                progress.log(
                    f"[images {time.monotonic() - progress.start:6.1f}s] {what}: cached ({layer.blob.digest[:19]})"
                )
                return layer
        log_path = s.cache / "logs" / f"{kind}-{key[:16]}.log"
        with progress.step(what, log_path), tempfile.TemporaryDirectory(prefix=f"lightbox-{kind}-", dir=s.cache) as tmp:
            layer_file, made = make(Path(tmp), log_path)
            layer = oci.Layer(store.put_file(layer_file, oci.MEDIA_LAYER_GZIP), made.diff_id)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"digest": layer.blob.digest, "size": layer.blob.size, "diffId": layer.diff_id}))
        return layer


def base_layer(s: Settings, progress: Progress, plan: Plan) -> oci.Layer:
    sources = apt_sources()
    inputs = {"suite": plan.suite, "packages": sorted(plan.apt_packages), "commands": list(plan.base_commands),
              "sources": sources.read_text() if sources else None}

    def make(work: Path, log_path: Path) -> tuple[Path, oci.Layer]:
        from lightbox.devtools.node_packages import ensure_packages

        ensure_packages(s.log, packages={"mmdebstrap": "/usr/bin/mmdebstrap"})
        rootfs = work / "rootfs.tar"
        argv = ["mmdebstrap", "--variant=minbase", f"--include={','.join(plan.apt_packages)}",
                *(f'--customize-hook=chroot "$1" /bin/sh -c {shlex.quote(c)}' for c in plan.base_commands),
                str(plan.suite), str(rootfs)]
        if sources is not None:
            argv.append(str(sources))
        _run(argv, log_path, {**os.environ, "SOURCE_DATE_EPOCH": str(s.epoch)})
        out = work / "layer.tar.gz"
        return out, oci.relayer_tar(rootfs, out, s.epoch)

    what = f"base layer: mmdebstrap {plan.suite} minbase + {', '.join(plan.apt_packages)} (about 3 min the first time)"
    return cached_layer(s, progress, "base", inputs, what, make)


def apt_sources() -> Path | None:
    """The Debian sources configured on this machine (deb822 first); None: mmdebstrap's default mirror."""
    for p in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if p.is_file() and p.read_text().strip():
            return p
    return None


def installer_wheel(s: Settings, progress: Progress) -> Path:
    dest = s.cache / "tools"
    found = sorted(dest.glob("installer-*.whl"))
    if found:
        return found[-1]
    with progress.step(f"downloading {INSTALLER_REQUIREMENT}", s.cache / "logs" / "tools.log"):
        return download_wheels(
            [INSTALLER_REQUIREMENT],
            dest,
            f"{sys.version_info[0]}.{sys.version_info[1]}",
            s.cache / "logs" / "tools.log",
        )[0]


def install_layer(
    wheels: Sequence[Path], out: Path, *, venv: str, python: str, epoch: int, installer: Path, log_path: Path
) -> oci.Layer:
    """A layer holding ``wheels`` installed into ``venv`` (bytecode only when this Python is the image's)."""
    stage = out.parent / "stage"
    stage.mkdir()
    same_python = python == f"{sys.version_info[0]}.{sys.version_info[1]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(installer),
        "PYTHONHASHSEED": "0",
        "SOURCE_DATE_EPOCH": str(epoch),
        "PYTHONSAFEPATH": "1",
    }
    _run(
        [
            sys.executable,
            "-m",
            "lightbox.devtools.wheelinstall",
            "--destdir",
            str(stage),
            "--venv",
            venv,
            "--python",
            python,
            *(["--compile"] if same_python else []),
            *map(str, wheels),
        ],
        log_path,
        env,
    )
    return oci.write_layer(oci.entries_from_tree(stage), out, epoch)


def _python_of(plan: Plan, plans: Mapping[str, Plan]) -> tuple[str, str]:
    p = plan
    while p.parent is not None:
        p = plans[p.parent]
    assert p.suite is not None and p.venv is not None
    return SUITE_PYTHON[p.suite], p.venv


# --- images --------------------------------------------------------------------------------


@dataclasses.dataclass
class _Image:
    layers: list[oci.Layer]
    env: dict[str, str]
    user: str
    workdir: str
    entrypoint: list[str] | None
    cmd: list[str] | None
    labels: dict[str, str]


def _build_one(name: str, s: Settings, progress: Progress, plans: dict[str, Plan], done: dict[str, _Image]) -> _Image:
    if name in done:
        return done[name]
    plan = plans.setdefault(name, plan_image(name, s.root, s.version))
    if plan.parent is not None:
        parent = _build_one(plan.parent, s, progress, plans, done)
        img = dataclasses.replace(parent, layers=list(parent.layers), env=dict(parent.env), labels=dict(parent.labels))
    else:
        img = _Image([base_layer(s, progress, plan)], {}, "0", "/", None, None, {})
    python, venv = _python_of(plan, plans)
    for step in plan.steps:
        img.layers.append(_step_layer(step, plan, s, progress, python, venv))
    img.env.update(plan.env)
    img.labels.update(plan.labels)
    img.user = plan.user or img.user
    img.workdir = plan.workdir or img.workdir
    if plan.entrypoint is not None:
        img.entrypoint, img.cmd = plan.entrypoint, None
    if plan.cmd is not None:
        img.cmd = plan.cmd
    done[name] = img
    return img


def _step_layer(step: Step, plan: Plan, s: Settings, progress: Progress, python: str, venv: str) -> oci.Layer:
    if step.kind == "copy":
        src = s.root / step.source
        if not src.is_file() or not src.resolve().is_relative_to(s.root.resolve()):
            raise ContainerfileError(
                str(plan.path), step.line, f"COPY source {step.source} is not a file of the build context"
            )
        data = src.read_bytes()
        mode = 0o755 if os.access(src, os.X_OK) else 0o644

        def make_copy(work: Path, log_path: Path) -> tuple[Path, oci.Layer]:
            out = work / "layer.tar.gz"
            return out, oci.write_layer([oci.Entry(step.dest.lstrip("/"), "file", mode, data=data)], out, s.epoch)

        inputs = {"dest": step.dest, "sha256": hashlib.sha256(data).hexdigest(), "mode": mode}
        return cached_layer(s, progress, "copy", inputs, f"{plan.name}: COPY {step.source} {step.dest}", make_copy)
    if step.kind == "requirements":
        requirements = pinned_requirements(s.root)

        def make_deps(work: Path, log_path: Path) -> tuple[Path, oci.Layer]:
            wheels = download_wheels(requirements, s.cache / "wheels" / _hash(requirements)[:16], python, log_path)
            out = work / "layer.tar.gz"
            return out, install_layer(wheels, out, venv=venv, python=python, epoch=s.epoch,
                                      installer=installer_wheel(s, progress), log_path=log_path)

        inputs = {"requirements": requirements, "python": python, "venv": venv, "installer": INSTALLER_REQUIREMENT}
        return cached_layer(s, progress, "deps", inputs, f"dependency layer: {len(requirements)} wheels", make_deps)
    if step.project != "lightbox":
        raise ContainerfileError(
            str(plan.path), step.line, f"only the lightbox wheel is built here, not {step.project}"
        )

    def make_app(work: Path, log_path: Path) -> tuple[Path, oci.Layer]:
        wheel = build_wheel(s.root, work / "wheel", s.epoch, log_path)
        out = work / "layer.tar.gz"
        return out, install_layer([wheel], out, venv=venv, python=python, epoch=s.epoch,
                                  installer=installer_wheel(s, progress), log_path=log_path)

    inputs = {"sources": source_hash(s.root), "python": python, "venv": venv, "installer": INSTALLER_REQUIREMENT}
    return cached_layer(s, progress, "app", inputs, "application layer: the lightbox wheel of this checkout", make_app)


def _finish(name: str, img: _Image, s: Settings, progress: Progress) -> BuiltImage:
    store = oci.BlobStore(s.cache / "blobs")
    env = [f"{k}={v}" for k, v in img.env.items()]
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    labels = {
        **img.labels,
        "org.opencontainers.image.version": s.version,
        "org.opencontainers.image.title": repository(name).rpartition("/")[2],
    }
    config = oci.image_config(img.layers, env=env, entrypoint=img.entrypoint, cmd=img.cmd, user=img.user,
                              workdir=img.workdir, labels=labels)
    config_blob = store.put_bytes(oci.canonical_json(config), oci.MEDIA_CONFIG)
    manifest_blob = store.put_bytes(oci.canonical_json(oci.manifest(config_blob, img.layers)), oci.MEDIA_MANIFEST)
    ref = f"{repository(name)}:{s.version}"
    out_dir = s.cache / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{repository(name).rpartition('/')[2]}-{s.version}-{manifest_blob.digest[7:19]}.oci.tar"
    if not archive.is_file():
        with progress.step(f"{ref}: writing OCI archive {archive.name}"):
            oci.write_archive(store, manifest_blob, repository(name), s.version, archive, s.epoch)
        _prune_archives(out_dir, f"{repository(name).rpartition('/')[2]}-{s.version}-", keep=ARCHIVES_KEPT)
    return BuiltImage(name, ref, manifest_blob.digest, archive)


def _prune_archives(out_dir: Path, prefix: str, keep: int) -> None:
    """Each source change writes new archives of ~125 MiB; keep the newest few per image (a caller may still import
    one)."""
    found = sorted(out_dir.glob(f"{prefix}*.oci.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in found[keep:]:
        old.unlink(missing_ok=True)


def build(
    names: Sequence[str] = tuple(IMAGES),
    *,
    root: Path | None = None,
    cache: Path | None = None,
    epoch: int | None = None,
    log: Log | None = None,
) -> dict[str, BuiltImage]:
    """Build the named images (default all); the base, dependency and app layers come from the cache when their inputs
    match."""
    unknown = [n for n in names if n not in IMAGES]
    if unknown:
        raise ImageBuildError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(IMAGES)}")
    root = root or repo_root()
    env_epoch = os.environ.get("SOURCE_DATE_EPOCH")
    s = Settings(
        root,
        cache or cache_dir(),
        epoch if epoch is not None else int(env_epoch) if env_epoch else DEFAULT_EPOCH,
        version(root),
        log or (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    s.cache.mkdir(parents=True, exist_ok=True)
    progress = Progress(s.log)
    plans: dict[str, Plan] = {}
    done: dict[str, _Image] = {}
    return {name: _finish(name, _build_one(name, s, progress, plans, done), s, progress) for name in names}


def prepare_context(dest: Path, *, root: Path | None = None, log: Log | None = None) -> Path:
    """``dest/dist``: what the Containerfiles bind-mount (the Lightbox wheel, pinned requirements and their wheels,
    pip)."""
    root = root or repo_root()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    dist = dest / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    logs = cache_dir() / "logs" / "context.log"
    requirements = pinned_requirements(root)
    (dist / "requirements.txt").write_text("".join(r + "\n" for r in requirements))
    say(f"context: {len(requirements)} pinned requirements, downloading wheels (log: {logs})")
    download_wheels(requirements, dist / "wheels", "3.11", logs)
    pip_wheel = download_wheels(["pip"], dist / "tools", "3.11", logs)[0]
    shutil.copyfile(pip_wheel, dist / "pip.whl")
    for old in dist.glob("lightbox-*.whl"):
        old.unlink()
    wheel = build_wheel(root, dist, DEFAULT_EPOCH, logs)
    say(f"context: {wheel.relative_to(dest)}, dist/requirements.txt, dist/wheels/, dist/pip.whl")
    return dist


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lightbox.devtools.images", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    b = sub.add_parser(
        "build", help="build images without a daemon; print REF@DIGEST per image (the archive paths on stderr)"
    )
    b.add_argument("names", nargs="*", help=f"images to build (default all: {', '.join(IMAGES)})")
    sub.add_parser("list", help="the images and their Containerfiles")
    c = sub.add_parser("context", help="write dist/ for docker/podman/buildah build from the Containerfiles")
    c.add_argument("dest", nargs="?", type=Path, default=repo_root())
    args = p.parse_args(argv)
    try:
        if args.verb == "list":
            for name, rel in IMAGES.items():
                print(f"{name:12} {repository(name)}:{version()}  {rel}")
        elif args.verb == "context":
            prepare_context(args.dest)
        else:
            for image in build(args.names or tuple(IMAGES)).values():
                print(f"{image.ref}@{image.digest}", flush=True)  # stdout: for $(...) in scripts
                print(f"  archive: {image.archive}", file=sys.stderr, flush=True)
    except (ImageBuildError, ContainerfileError) as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
