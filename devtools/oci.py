"""Reproducible OCI image pieces: layer tarballs, image config, manifest, OCI layout archive.

Everything here is a pure function of its inputs, so the same inputs give the same digests:
tar entries sorted by name, every mtime set to one epoch, owner root:root, no user/group
names, no device nodes, gzip without a name or time, JSON with sorted keys and no timestamps.
The layers are written with Python's tarfile instead of umoci's repack, which would take
each file's metadata from an unpacked copy on disk.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd's `ctr images import` names an image from this annotation when given no --base-name
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:... of the stored bytes
    size: int
    media_type: str

    def descriptor(self, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if annotations:
            d["annotations"] = dict(annotations)
        return d


@dataclass(frozen=True)
class Layer:
    blob: Blob  # the gzip-compressed tar
    diff_id: str  # sha256:... of the uncompressed tar, as the config's rootfs lists it


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class BlobStore:
    """Content-addressed ``blobs/sha256/<hex>`` under a directory (the OCI layout's own shape)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "sha256").mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        if algo != "sha256" or len(hexdigest) != 64:
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / "sha256" / hexdigest

    def put_bytes(self, data: bytes, media_type: str) -> Blob:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            with _private_tmp(target) as tmp:
                tmp.write_bytes(data)
        return Blob(digest, len(data), media_type)

    def put_file(self, path: Path, media_type: str) -> Blob:
        digest = sha256_file(path)
        target = self.path(digest)
        if not target.exists():
            with _private_tmp(target) as tmp:
                shutil.copyfile(path, tmp)
        return Blob(digest, path.stat().st_size, media_type)


@contextlib.contextmanager
def _private_tmp(target: Path) -> Iterator[Path]:
    """A temporary file of this writer's own beside ``target``, renamed onto it when written: two builds
    writing the same blob or archive at once never see each other's half-written file."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class _HashingWriter(io.RawIOBase):
    """Passes writes to ``sink`` and hashes them (the diff_id of the tar inside the gzip)."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.hash.update(data)
        self.sink.write(data)
        return len(data)


def _normalise(info: tarfile.TarInfo, mtime: float) -> tarfile.TarInfo:
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.pax_headers = {}
    info.mode &= 0o7777
    return info


@dataclass(frozen=True)
class Entry:
    """One file-system object of a layer, in the image's own absolute-path namespace."""

    path: str  # "opt/venv/bin/python" (no leading slash)
    kind: str  # "dir" | "file" | "symlink"
    mode: int = 0o755
    source: Path | None = None  # file contents
    data: bytes | None = None  # or inline contents
    target: str = ""  # symlink target


def entries_from_tree(root: Path, prefix: str = "") -> list[Entry]:
    """Every object under ``root`` as entries; special files are refused (a layer carries no devices)."""
    out: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = (prefix.rstrip("/") + "/" if prefix else "") + full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(rel, "symlink", 0o777, target=os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(rel, "dir", stat.S_IMODE(st.st_mode)))
            elif stat.S_ISREG(st.st_mode):
                out.append(Entry(rel, "file", stat.S_IMODE(st.st_mode), source=full))
            else:
                raise ValueError(f"{full}: only files, folders and symlinks go into a layer")
    return out


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Adds the missing parent folders (mode 0755), so the tar can be unpacked on its own."""
    by_path = {e.path: e for e in entries}
    for path in list(by_path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            by_path.setdefault(parent, Entry(parent, "dir", 0o755))
    return [by_path[p] for p in sorted(by_path)]


def write_layer(entries: Iterable[Entry], out: Path, mtime: int) -> Layer:
    """A gzip-compressed layer tar with sorted entries and fixed metadata; returns its digests."""
    ordered = with_parents(entries)
    tmp = out.with_suffix(".tmp")
    with tmp.open("wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            hashing = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for e in ordered:
                    _add(tar, e, mtime)
    os.replace(tmp, out)
    return Layer(Blob(sha256_file(out), out.stat().st_size, MEDIA_LAYER_GZIP), "sha256:" + hashing.hash.hexdigest())


def _add(tar: tarfile.TarFile, e: Entry, mtime: int) -> None:
    info = tarfile.TarInfo(e.path)
    info.mode = e.mode
    if e.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(_normalise(info, mtime))
    elif e.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = e.target
        tar.addfile(_normalise(info, mtime))
    elif e.data is not None:
        info.size = len(e.data)
        tar.addfile(_normalise(info, mtime), io.BytesIO(e.data))
    else:
        assert e.source is not None
        info.size = e.source.stat().st_size
        with e.source.open("rb") as fh:
            tar.addfile(_normalise(info, mtime), fh)


def relayer_tar(src: Path, out: Path, mtime: int, drop_prefixes: Sequence[str] = ("dev/",)) -> Layer:
    """A root file-system tar (mmdebstrap's) as a layer: sorted, normalised, without device nodes."""
    with tarfile.open(src, "r:") as tar:
        members = tar.getmembers()
        by_name: dict[str, tarfile.TarInfo] = {}
        for m in members:
            name = m.name.removeprefix("./").rstrip("/")
            if not name or any(name.startswith(p) for p in drop_prefixes) or m.isdev() or m.isfifo():
                continue
            by_name[name] = m
        tmp = out.with_suffix(".tmp")
        with tmp.open("wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                hashing = _HashingWriter(gz)  # type: ignore[arg-type]
                with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as outtar:
                    for name in sorted(by_name):
                        m = by_name[name]
                        info = tarfile.TarInfo(name)
                        # Hard links become copies: sorted order may put a link before its target.
                        regular = m.isreg() or m.islnk()
                        info.type = tarfile.REGTYPE if regular else m.type
                        info.mode, info.linkname = m.mode, "" if regular else m.linkname
                        content = tar.extractfile(m) if regular else None
                        info.size = len(content.read()) if content is not None else 0
                        if content is not None:
                            content.seek(0)
                        _normalise(info, min(m.mtime, mtime))
                        info.uid, info.gid = m.uid, m.gid  # a few system files belong to other ids
                        outtar.addfile(info, content)
    os.replace(tmp, out)
    return Layer(Blob(sha256_file(out), out.stat().st_size, MEDIA_LAYER_GZIP), "sha256:" + hashing.hash.hexdigest())


def image_config(
    layers: Sequence[Layer],
    *,
    env: Sequence[str],
    entrypoint: Sequence[str] | None,
    cmd: Sequence[str] | None,
    user: str,
    workdir: str,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """The OCI image config. No ``created`` or ``history``: they would make each build's digest differ."""
    config: dict[str, Any] = {"Env": list(env), "User": user, "WorkingDir": workdir}
    if entrypoint is not None:
        config["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        config["Cmd"] = list(cmd)
    if labels:
        config["Labels"] = dict(labels)
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }


def manifest(config: Blob, layers: Sequence[Layer]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }


def write_archive(store: BlobStore, manifest_blob: Blob, name: str, tag: str, out: Path, mtime: int) -> None:
    """An OCI layout as a tar (``oci-archive:`` for skopeo, ``ctr images import``, ``podman load``)."""
    manifest_doc = json.loads(store.path(manifest_blob.digest).read_bytes())
    digests = [
        manifest_blob.digest,
        manifest_doc["config"]["digest"],
        *(layer["digest"] for layer in manifest_doc["layers"]),
    ]
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            manifest_blob.descriptor({ANNOTATION_CONTAINERD_NAME: f"{name}:{tag}", ANNOTATION_REF_NAME: tag})
        ],
    }
    entries = [
        Entry("oci-layout", "file", 0o644, data=canonical_json({"imageLayoutVersion": "1.0.0"})),
        Entry("index.json", "file", 0o644, data=canonical_json(index)),
        *(
            Entry(f"blobs/sha256/{d.partition(':')[2]}", "file", 0o644, source=store.path(d))
            for d in dict.fromkeys(digests)
        ),
    ]
    with _private_tmp(out) as tmp:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for e in with_parents(entries):
                _add(tar, e, mtime)
