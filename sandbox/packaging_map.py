"""A MONAI Application Package's manifests: ``app.json`` (command, input and output, environment)
and ``pkg.json`` (resources), at ``/etc/holoscan/`` (MAP spec 1.0, camelCase keys) or
``/etc/monai/`` (0.1, kebab-case keys), read from an image's layers or a file, and checked
against an Algorithm's spec as ``contract.check_algorithm_spec`` checks ``algorithm.json``.

The manifests are the vendor's declarations (not patient data), so messages may name their
values; they are bounded before parsing all the same.
"""

from __future__ import annotations

import gzip
import json
import shlex
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightbox.sandbox.contract import parse_quantity

MANIFEST_DIRS = ("etc/holoscan", "etc/monai")
MAX_MANIFEST_BYTES = 1 << 20


class ManifestError(ValueError):
    """A manifest is missing or does not say what the MAP spec requires; the message says which field."""


@dataclass(frozen=True)
class MapManifest:
    command: list[str]
    input_path: str
    output_path: str
    environment: dict[str, str] = field(default_factory=dict)
    cpu: float = 1.0
    gpu: int = 0
    memory: str = "1Gi"
    spec_version: str = "1.0"


def _get(doc: Mapping[str, Any], camel: str) -> Any:
    """A key in 1.0's camelCase or 0.1's kebab-case."""
    kebab = "".join(f"-{c.lower()}" if c.isupper() else c for c in camel)
    return doc.get(camel, doc.get(kebab))


def _command(value: Any) -> list[str]:
    """1.0 says a shell command string; the Holoscan packager writes a JSON array in that string."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return shlex.split(value)
        if isinstance(parsed, list) and parsed and all(isinstance(v, str) for v in parsed):
            return parsed
    raise ManifestError("app.json: 'command' must be a non-empty command (a string or a list of strings)")


def parse_manifests(app: bytes, pkg: bytes | None, spec_version: str = "1.0") -> MapManifest:
    """``app.json`` and (optional) ``pkg.json`` as the MAP spec defines them."""
    docs: list[dict[str, Any]] = []
    for name, data in (("app.json", app), ("pkg.json", pkg)):
        if data is None:
            docs.append({})
            continue
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{name} is larger than {MAX_MANIFEST_BYTES >> 10} KiB")
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{name} is not JSON ({exc.msg})") from None
        except ValueError:
            raise ManifestError(f"{name} is not JSON (not UTF-8 text)") from None
        if not isinstance(doc, dict):
            raise ManifestError(f"{name} must be a JSON object")
        docs.append(doc)
    app_doc, pkg_doc = docs
    for key in ("input", "output"):
        if not isinstance(app_doc.get(key), dict):
            raise ManifestError(f"app.json: '{key}' is required (an object with the {key} path)")
    env = app_doc.get("environment") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in env.items()
    ):
        raise ManifestError("app.json: 'environment' must be an object of names and values")
    resources = pkg_doc.get("resources") or {}
    if not isinstance(resources, dict):
        raise ManifestError("pkg.json: 'resources' must be an object")
    try:
        cpu = float(resources.get("cpu", 1))
        gpu = int(resources.get("gpu", 0))
        memory = str(resources.get("memory", "1Gi"))
        parse_quantity(memory)
    except (TypeError, ValueError):
        raise ManifestError(
            "pkg.json: resources.cpu, resources.gpu and resources.memory must be a number, an integer "
            "and a size like 8Gi"
        ) from None
    if cpu <= 0 or gpu < 0:
        raise ManifestError("pkg.json: resources.cpu must be positive and resources.gpu not negative")
    return MapManifest(
        command=_command(app_doc.get("command")),
        input_path=str(app_doc["input"].get("path", "input/")),
        output_path=str(app_doc["output"].get("path", "output/")),
        environment={k: str(v) for k, v in env.items()},
        cpu=cpu,
        gpu=gpu,
        memory=memory,
        spec_version=spec_version,
    )


def read_from_folder(folder: Path) -> MapManifest:
    """``folder/app.json`` and, when present, ``folder/pkg.json`` (``vendor check --manifest``)."""
    pkg = folder / "pkg.json"
    return parse_manifests((folder / "app.json").read_bytes(), pkg.read_bytes() if pkg.is_file() else None)


def _layer_files(tar: tarfile.TarFile, digest: str, wanted: set[str], found: dict[str, bytes | None]) -> None:
    member = tar.extractfile(f"blobs/sha256/{digest.partition(':')[2]}")
    if member is None:
        raise ManifestError(f"layer {digest} is missing from the archive")
    raw = member.read()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    import io

    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        for info in layer:
            name = info.name.lstrip("./")
            folder, _, base = name.rpartition("/")
            if base.startswith(".wh.") and f"{folder}/{base[4:]}" in wanted:
                found[f"{folder}/{base[4:]}"] = None  # a whiteout: deleted by this layer
            elif name in wanted and info.isfile() and info.size <= MAX_MANIFEST_BYTES:
                got = layer.extractfile(info)
                found[name] = got.read() if got is not None else None


def read_from_archive(path: Path) -> MapManifest:
    """The manifests from an OCI archive's layers (later layers win), without running the image."""
    from lightbox.sandbox.imagecheck import _read_archive

    wanted = {f"{d}/{n}" for d in MANIFEST_DIRS for n in ("app.json", "pkg.json")}
    found: dict[str, bytes | None] = {}
    with tarfile.open(path) as tar:
        _, manifest, _ = _read_archive(tar, path)
        for layer in manifest.get("layers") or []:
            _layer_files(tar, layer["digest"], wanted, found)
    for folder, version in (("etc/holoscan", "1.0"), ("etc/monai", "0.1")):
        app = found.get(f"{folder}/app.json")
        if app is not None:
            return parse_manifests(app, found.get(f"{folder}/pkg.json"), version)
    raise ManifestError("the image has no /etc/holoscan/app.json (MAP spec 1.0) or /etc/monai/app.json (0.1)")


def check_algorithm_spec(spec: Mapping[str, Any], manifest: MapManifest) -> list[str]:
    """An Algorithm's resources (camelCase dict) against what the MAP's pkg.json asks for."""
    problems: list[str] = []
    res = spec.get("resources") or {}
    for key, need in (("cpu", manifest.cpu), ("memory", manifest.memory)):
        have = res.get(key)
        if have is not None and parse_quantity(have) < parse_quantity(need):
            problems.append(f"spec.resources.{key} {have} is below the MAP's pkg.json resources.{key} {need}")
    if int(res.get("gpus", 0) or 0) < manifest.gpu:
        problems.append(
            f"spec.resources.gpus {res.get('gpus', 0)} is below the MAP's pkg.json resources.gpu {manifest.gpu}"
        )
    if spec.get("packaging") != "monai-map":
        problems.append(
            f"spec.packaging is {spec.get('packaging')!r}; the image is a MONAI Application Package (monai-map)"
        )
    return problems
