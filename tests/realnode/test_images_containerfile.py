"""The Containerfile's own pip steps, run in a container of the base layer, give the daemonless layers' files.

The daemonless build installs wheels with pypa's installer where images/lightbox/Containerfile
runs pip; this runs the Containerfile's RUN lines themselves (pip from dist/pip.whl, the context
`images context` prepares) with containerd, on the base layer the build made, and compares the
resulting /opt/venv with the dependency and application layers. Needs root and containerd.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from lightbox.devtools import containerfile, images, oci
from lightbox.sandbox import imagecheck

SITE = "opt/venv/lib/python3.11/site-packages/"
BOOKKEEPING = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def _unavailable() -> str | None:
    from lightbox.devtools.node_packages import PackageError, ensure_packages

    if os.geteuid() != 0:
        return "needs root (containerd)"
    try:  # a fresh machine (CI's) gets them from the project's own code
        ensure_packages(lambda line: None, packages={"containerd": "/usr/bin/containerd", "runc": "/usr/sbin/runc",
                                                     "mmdebstrap": "/usr/bin/mmdebstrap"})
    except PackageError as exc:
        return str(exc)
    missing = [t for t in ("containerd", "ctr", "runc", "mmdebstrap") if shutil.which(t) is None]
    return f"missing {', '.join(missing)}" if missing else None


#: The venv the Containerfile's dependency step left, by every input of that step (see _step_key): a built
#: artifact like the image layers, reused while nothing it came from changed (that pip run took 60-250 s
#: of CPU here). The application step, whose wheel changes with every commit, always runs, and the
#: comparison below always runs on what the steps left.
_DEPENDENCY_STEPS = images.cache_dir() / "containerfile-dependency-step"


def _step_key(step: str, env: dict[str, str], base_digest: str, dist: Path) -> str:
    """The step's command and environment, the base layer it runs on, and every file of the context but the
    application wheel (requirements.txt, the wheels, pip's own wheel), by content."""
    h = hashlib.sha256(json.dumps({"step": step, "env": env, "base": base_digest}, sort_keys=True).encode())
    for f in sorted([dist / "requirements.txt", dist / "pip.whl", *(dist / "wheels").glob("*.whl")]):
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:32]


def _keep(venv: Path, dest: Path) -> None:
    """A copy of ``venv`` at ``dest``, renamed into place whole (another session may read it meanwhile)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(venv, partial, symlinks=True)
    try:
        partial.rename(dest)
    except OSError:   # another session kept the same one first
        shutil.rmtree(partial, ignore_errors=True)
    for old in dest.parent.iterdir():   # earlier inputs' venvs: not needed again
        if old.name != dest.name and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)


def _package_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k.removeprefix(SITE): v for k, v in files.items()
            if k.startswith(SITE) and "__pycache__" not in k and Path(k).name not in BOOKKEEPING}


def _layer_files(store: oci.BlobStore, digest: str) -> dict[str, bytes]:
    with tarfile.open(store.path(digest), "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_the_containerfile_pip_steps_install_the_same_files(
    tmp_path: Path, built_images: dict[str, images.BuiltImage]
) -> None:
    reason = _unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Containerfile check cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"Containerfile check: {reason}")
    built = built_images["lightbox"]
    store = oci.BlobStore(images.cache_dir() / "blobs")
    manifest = json.loads(store.path(built.digest).read_bytes())
    config = json.loads(store.path(manifest["config"]["digest"]).read_bytes())
    base_digest, deps_digest, _app = (layer["digest"] for layer in manifest["layers"])

    # an image of the base layer alone, as the Containerfile's first RUN leaves it
    base = oci.Layer(
        oci.Blob(base_digest, manifest["layers"][0]["size"], oci.MEDIA_LAYER_GZIP), config["rootfs"]["diff_ids"][0]
    )
    base_config = store.put_bytes(oci.canonical_json(oci.image_config(
        [base], env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], entrypoint=None, cmd=None,
        user="0", workdir="/", labels={})), oci.MEDIA_CONFIG)
    base_manifest = store.put_bytes(oci.canonical_json(oci.manifest(base_config, [base])), oci.MEDIA_MANIFEST)
    oci.write_archive(store, base_manifest, "localhost/lightbox-base-test", "0", tmp_path / "base.tar", 0)

    # the build context and the venv as the base layer holds it
    dist = images.prepare_context(tmp_path / "ctx")
    venv = tmp_path / "venv"
    with tarfile.open(store.path(base_digest), "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("opt/venv/")]
        for m in members:
            m.name = m.name.removeprefix("opt/venv/")
        tar.extractall(venv, members=members, filter="tar")

    plan = containerfile.parse((images.repo_root() / images.IMAGES["lightbox"]).read_text())
    env = {
        k: v for ins in plan if ins.keyword == "ENV" for k, v in containerfile.key_values(ins, "Containerfile").items()
    }
    pip_steps = [
        re.sub(r"--mount=\S+", "", ins.args).strip()
        for ins in plan
        if ins.keyword == "RUN" and "pip install" in ins.args
    ]
    assert len(pip_steps) == 2 and "-r /dist/requirements.txt" in pip_steps[0] and "lightbox-" in pip_steps[1]
    with imagecheck.private_containerd() as socket:
        ctr = ["ctr", "--address", str(socket), "--namespace", "lightbox-containerfile-test"]
        # kept in the cached root between sessions: the base layer changes rarely, and unpacking it took ~10 s
        imagecheck.import_archive(ctr, tmp_path / "base.tar", "localhost/lightbox-base-test:0")
        for i, step in enumerate(pip_steps):
            cached = _DEPENDENCY_STEPS / _step_key(step, env, base_digest, dist) if i == 0 else None
            if cached is not None and cached.is_dir():
                shutil.rmtree(venv)
                shutil.copytree(cached, venv, symlinks=True)
                continue
            run = subprocess.run(
                [*ctr, "run", "--rm", "--mount", f"type=bind,src={venv},dst=/opt/venv,options=rbind:rw",
                 "--mount", f"type=bind,src={dist},dst=/dist,options=rbind:ro",
                 *(a for k, v in env.items() for a in ("--env", f"{k}={v}")),
                 "localhost/lightbox-base-test:0", f"containerfile-step-{i}", "/bin/sh", "-c", step],
                capture_output=True, text=True, timeout=900)
            imagecheck.remove_cgroup(f"/lightbox-containerfile-test/containerfile-step-{i}")  # runc leaves the parent
            assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
            if cached is not None:
                _keep(venv, cached)

    pip_files = {
        f"opt/venv/{p.relative_to(venv).as_posix()}": p.read_bytes()
        for p in venv.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    # the application layer from the context's own wheel: the checkout may change while this runs
    (wheel,) = dist.glob("lightbox-*.whl")
    (tmp_path / "app").mkdir()
    installer = sorted((images.cache_dir() / "tools").glob("installer-*.whl"))[-1]
    images.install_layer(
        [wheel],
        tmp_path / "app" / "layer.tar.gz",
        venv="/opt/venv",
        python="3.11",
        epoch=images.DEFAULT_EPOCH,
        installer=installer,
        log_path=tmp_path / "app" / "install.log",
    )
    with tarfile.open(tmp_path / "app" / "layer.tar.gz", "r:gz") as tar:
        app_files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    ours = {**_layer_files(store, deps_digest), **app_files}
    theirs_pkg, ours_pkg = _package_files(pip_files), _package_files(ours)
    assert sorted(theirs_pkg) == sorted(ours_pkg)
    differing = [k for k in ours_pkg if hashlib.sha256(ours_pkg[k]).digest() != hashlib.sha256(theirs_pkg[k]).digest()]
    assert differing == []
    # console scripts: the same names, each for the venv's interpreter (pip's and installer's launcher texts differ)
    scripts = {
        k: v.split(b"\n", 1)[0]
        for k, v in pip_files.items()
        if k.startswith("opt/venv/bin/") and not Path(k).name.startswith(("activate", "Activate"))
    }
    our_scripts = {k: v.split(b"\n", 1)[0] for k, v in ours.items() if k.startswith("opt/venv/bin/")}
    assert scripts == our_scripts
    assert scripts["opt/venv/bin/lightbox"] == b"#!/opt/venv/bin/python"


def test_the_lightbox_image_runs_its_commands_as_the_sandbox_user(built_images: dict[str, images.BuiltImage]) -> None:
    """Read-only root, uid 65532 (the image's USER), no network: what the operator's pods give it."""
    reason = _unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Lightbox image check cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"Lightbox image check: {reason}")
    built = built_images["lightbox"]
    probe = ("import getpass, os; import kopf, kubernetes, lightbox.operator.main, lightbox.sandbox.stager, "
             "lightbox.sandbox.scorer; print(os.getuid(), os.getgid(), getpass.getuser())")
    with imagecheck.private_containerd() as socket:
        ctr = ["ctr", "--address", str(socket), "--namespace", "lightbox-image-test"]
        # Kept between sessions (earlier digests dropped): a new checkout unpacks only its application layer.
        imagecheck.import_archive(ctr, built.archive, built.ref)
        runs = {}
        for i, argv in enumerate((["python", "-c", probe], ["lightbox", "--help"])):
            runs[argv[0]] = subprocess.run(
                [*ctr, "run", "--rm", "--read-only", built.ref, f"lightbox-image-{i}", *argv],
                capture_output=True,
                text=True,
                timeout=300,
            )
            imagecheck.remove_cgroup(f"/lightbox-image-test/lightbox-image-{i}")
    # kopf names the operator from the user's passwd entry: without one the operator could not start
    assert runs["python"].returncode == 0 and runs["python"].stdout.split() == ["65532", "65532", "lightbox"], runs[
        "python"
    ]
    assert (
        runs["lightbox"].returncode == 0 and "stage" in runs["lightbox"].stdout and "score" in runs["lightbox"].stdout
    )
