"""The pod sandbox ("pause") image, built without a daemon or registry, and image import.

containerd needs its ``sandbox_image`` before any pod runs and there is no
registry to pull one from: the static pause binary (devtools/binaries.py) is
packed as a one-file OCI image with umoci, kept as an OCI archive in the cache
and imported into the node's containerd with ``ctr images import``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from lightbox.devtools import binaries as _binaries
from lightbox.devtools import node_config as cfg

Log = Callable[[str], None]
#: uid:gid of the pause process; any unprivileged id works, it only sleeps.
PAUSE_USER = "65535:65535"


class ImageError(RuntimeError):
    """An image could not be built or imported (the message names the command and its output)."""


def _run(cmd: Sequence[str], what: str, timeout: float = 600) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(f"{what}: {' '.join(cmd)} could not run: {exc}") from exc
    if out.returncode != 0:
        raise ImageError(f"{what}: `{' '.join(cmd)}` failed (exit {out.returncode}): "
                         f"{(out.stderr or out.stdout).strip()[-2000:]}")
    return out.stdout


def pause_archive_path(cache: Path) -> Path:
    return cache / "images" / f"pause-{_binaries.PAUSE_VERSION}.oci.tar"


def tag_of(ref: str) -> tuple[str, str]:
    """``localhost/lightbox/pause:1`` -> (``localhost/lightbox/pause``, ``1``)."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or not name:
        raise ValueError(f"image reference {ref!r} must be NAME:TAG")
    return name, tag


def build_pause_archive(pause_binary: Path, dest: Path, *, ref: str = cfg.PAUSE_IMAGE, log: Log) -> Path:
    """Pack ``pause_binary`` as an OCI archive at ``dest`` (atomic: built beside it, then renamed)."""
    if shutil.which("umoci") is None:
        raise ImageError("umoci is not installed; `lightbox node up` installs it (Debian package umoci)")
    _, tag = tag_of(ref)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pause-", dir=dest.parent) as tmp:
        layout, bundle = Path(tmp) / "layout", Path(tmp) / "bundle"
        image = f"{layout}:{tag}"
        _run(["umoci", "init", "--layout", str(layout)], "umoci init")
        _run(["umoci", "new", "--image", image], "umoci new")
        _run(["umoci", "unpack", "--image", image, str(bundle)], "umoci unpack")
        rootfs = bundle / "rootfs"
        shutil.copy2(pause_binary, rootfs / "pause")
        (rootfs / "pause").chmod(0o755)
        _run(["umoci", "repack", "--image", image, str(bundle)], "umoci repack")
        _run(["umoci", "config", "--image", image, "--config.entrypoint", "/pause", "--config.user", PAUSE_USER,
              "--os", "linux", "--architecture", "amd64"], "umoci config")
        _run(["umoci", "gc", "--layout", str(layout)], "umoci gc")
        partial = Path(tmp) / "pause.tar"
        _run(["tar", "-C", str(layout), "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner",
              "-cf", str(partial), "."], "tar of the OCI layout")
        partial.replace(dest)
    log(f"built the pause image {ref} into {dest}")
    return dest


def ensure_pause_archive(cache: Path, log: Log) -> Path:
    dest = pause_archive_path(cache)
    if dest.is_file():
        return dest
    pause = _binaries.ensure_built(_binaries.pause_spec(), cache=cache, log=log)["pause"]
    return build_pause_archive(pause, dest, log=log)


def ctr_base(socket: Path) -> list[str]:
    return ["ctr", "--address", str(socket), "--namespace", "k8s.io"]


def image_present(socket: Path, ref: str) -> bool:
    out = subprocess.run([*ctr_base(socket), "images", "ls", "-q"], capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and ref in out.stdout.split()


def import_archive(socket: Path, archive: Path, ref: str, *, digest: str | None = None, log: Log) -> None:
    """Import an OCI archive whose index names tag ``TAG`` as ``ref`` (NAME:TAG) into the node's containerd.

    With ``digest`` the image counts as present only under NAME@DIGEST: a tag is reused by
    every build, a digest names one image.
    """
    name, _ = tag_of(ref)
    if image_present(socket, f"{name}@{digest}" if digest else ref):
        return
    _run([*ctr_base(socket), "images", "import", "--digests", "--base-name", name, str(archive)],
         f"import of {archive}")
    if not image_present(socket, ref):
        raise ImageError(f"imported {archive} but containerd does not list {ref}: the archive's index must "
                         f"name the tag {tag_of(ref)[1]!r} (org.opencontainers.image.ref.name)")
    log(f"imported {ref} from {archive}")
