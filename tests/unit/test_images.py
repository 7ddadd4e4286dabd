"""The daemonless image build: Containerfile subset, reproducible layers, cache, OCI archive."""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lightbox.devtools import containerfile, images, oci
from lightbox.sandbox.contract import AlgorithmManifest

ROOT = images.repo_root()
EPOCH = 1_700_000_000


# --- the Containerfiles as the build reads them ---------------------------------------------


def test_the_lightbox_containerfile_plans_base_deps_and_app_layers() -> None:
    plan = images.plan_image("lightbox", ROOT, "0.1.0")
    assert plan.suite == "bookworm" and plan.parent is None
    assert set(plan.apt_packages) == {"python3", "python3-venv"}
    assert plan.venv == "/opt/venv"
    # the rest of the base RUN runs in the new root: the venv, then the pods' user with a passwd entry
    assert plan.base_commands[0] == "python3 -m venv --without-pip /opt/venv"
    assert any("useradd" in c and "--uid 65532" in c for c in plan.base_commands)
    assert [s.kind for s in plan.steps] == ["requirements", "wheel"]
    assert plan.user == "65532:65532" and plan.entrypoint == ["lightbox"]
    # the operator's builders run `lightbox stage` and `python -m ...`: both must resolve in the venv
    assert plan.env["PATH"].split(":")[0] == "/opt/venv/bin"


@pytest.mark.parametrize("name", ["classifier", "segmenter", "detector", "misbehave"])
def test_reference_images_follow_the_vendor_contract(name: str) -> None:
    plan = images.plan_image(name, ROOT, "0.1.0")
    assert plan.parent == "lightbox"
    copies = [s for s in plan.steps if s.kind == "copy"]
    assert [c.dest for c in copies] == ["/opt/lightbox/algorithm.json"]  # the contract's manifest path
    manifest = AlgorithmManifest.model_validate_json((ROOT / copies[0].source).read_bytes())
    # the manifest and the Containerfile are written separately; they must name the same entry point
    assert manifest.command == plan.entrypoint
    assert plan.user == "65532:65532"


def test_misbehave_takes_its_mode_as_the_argument() -> None:
    plan = images.plan_image("misbehave", ROOT, "0.1.0")
    assert plan.entrypoint == ["python", "-m", "lightbox.sandbox.reference.misbehave"] and plan.cmd == ["network"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("FROM debian:bookworm\nRUN curl -fsSL https://x.example | sh\n", "Containerfile:2: RUN"),
        ("FROM debian:bookworm AS build\n", "FROM takes one image reference"),
        ("FROM debian:bookworm\nFROM debian:bookworm\n", "one FROM per file"),
        ("FROM debian:bookworm\nENTRYPOINT lightbox stage\n", "exec form"),
        ("FROM debian:bookworm\nADD https://x.example/w.bin /w\n", "ADD is not supported"),
        ("FROM debian:bookworm\nRUN --mount=type=cache,target=/root/.cache pip install x\n", "only bind mounts"),
        ("FROM debian:bookworm\nCOPY --chown=1:1 a /b\n", "COPY takes one context file"),
        ("FROM quay.io/somebody/python:3.11\n", "starts from debian"),
        ("USER 1\nFROM debian:bookworm\n", "USER before FROM"),
    ],
)
def test_what_the_daemonless_build_cannot_reproduce_is_refused_by_line(
    tmp_path: Path, text: str, fragment: str
) -> None:
    (tmp_path / "images" / "lightbox").mkdir(parents=True)
    (tmp_path / "images" / "lightbox" / "Containerfile").write_text(text)
    with pytest.raises(containerfile.ContainerfileError) as err:
        images.plan_image("lightbox", tmp_path, "0.1.0")
    assert fragment in str(err.value)
    assert "images/lightbox/Containerfile:" in str(err.value)


def test_the_base_run_splits_into_packages_and_commands() -> None:
    packages, commands = images.split_base_run(
        "apt-get update && apt-get install -y --no-install-recommends python3 jq && rm -rf /var/lib/apt/lists/* "
        "&& python3 -m venv /v && echo done")
    assert packages == ("python3", "jq")
    assert commands == ("python3 -m venv /v", "echo done")


def test_continuations_and_comments_are_joined_as_buildkit_does() -> None:
    text = (
        "FROM debian:bookworm\n# comment\nRUN apt-get update \\\n  # inner comment\n"
        " && apt-get install -y python3 \\\n && python3 -m venv /v\n"
    )
    lines = containerfile.logical_lines(text)
    assert lines == [
        (1, "FROM debian:bookworm"),
        (3, "RUN apt-get update && apt-get install -y python3 && python3 -m venv /v"),
    ]


# --- layers -------------------------------------------------------------------------------


def _members(layer_file: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(layer_file, "r:gz") as tar:
        return tar.getmembers()


def test_a_layer_is_sorted_with_fixed_owner_and_time_whatever_the_files_on_disk(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "b").mkdir(parents=True)
    (tree / "b" / "z.txt").write_text("z")
    (tree / "a.txt").write_text("a")
    (tree / "link").symlink_to("a.txt")
    layer = oci.write_layer(oci.entries_from_tree(tree, "opt/x"), tmp_path / "l.tar.gz", EPOCH)
    members = _members(tmp_path / "l.tar.gz")
    names = [m.name for m in members]
    assert names == ["opt", "opt/x", "opt/x/a.txt", "opt/x/b", "opt/x/b/z.txt", "opt/x/link"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(EPOCH, 0, 0, "", "")}
    # digests computed here with hashlib, independently of the writer's own hashing
    raw = (tmp_path / "l.tar.gz").read_bytes()
    assert layer.blob.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert layer.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(raw)).hexdigest()


def test_device_nodes_are_refused_in_a_layer(tmp_path: Path) -> None:
    import os

    (tmp_path / "t").mkdir()
    os.mkfifo(tmp_path / "t" / "fifo")
    with pytest.raises(ValueError, match="only files, folders and symlinks"):
        oci.entries_from_tree(tmp_path / "t")


@pytest.fixture(scope="module")
def installer_whl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = images.cache_dir() / "tools"
    found = sorted(cache.glob("installer-*.whl"))
    if found:
        return found[-1]
    return images.download_wheels([images.INSTALLER_REQUIREMENT], cache, f"{sys.version_info[0]}.{sys.version_info[1]}",
                                  tmp_path_factory.mktemp("log") / "dl.log")[0]


@pytest.fixture(scope="module")
def lightbox_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    return images.build_wheel(ROOT, out, EPOCH, out / "build.log")


def _app_layer(wheel: Path, installer: Path, where: Path) -> oci.Layer:
    where.mkdir()
    return images.install_layer([wheel], where / "layer.tar.gz", venv="/opt/venv", python="3.11", epoch=EPOCH,
                                installer=installer, log_path=where / "install.log")


@pytest.fixture(scope="module")
def app_layer(
    tmp_path_factory: pytest.TempPathFactory, lightbox_wheel: Path, installer_whl: Path
) -> tuple[oci.Layer, Path]:
    """The app layer of the unchanged wheel and its file, built once: three tests read it (a build takes seconds)."""
    where = tmp_path_factory.mktemp("app") / "ours"
    return _app_layer(lightbox_wheel, installer_whl, where), where / "layer.tar.gz"


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="bytecode is compiled only by the image's own Python minor version"
)
def test_the_app_layer_is_reproducible(
    tmp_path: Path, lightbox_wheel: Path, installer_whl: Path, app_layer: tuple[oci.Layer, Path]
) -> None:
    first, _ = app_layer
    second = _app_layer(lightbox_wheel, installer_whl, tmp_path / "two")
    assert first.blob.digest == second.blob.digest and first.diff_id == second.diff_id
    names = [m.name for m in _members(tmp_path / "two" / "layer.tar.gz")]
    assert "opt/venv/lib/python3.11/site-packages/lightbox/cli.py" in names
    # bytecode is shipped (the root file system is read-only at run time, so Python could not cache it)
    assert "opt/venv/lib/python3.11/site-packages/lightbox/__pycache__/cli.cpython-311.pyc" in names


def test_a_changed_source_changes_the_app_layer(
    tmp_path: Path, lightbox_wheel: Path, installer_whl: Path, app_layer: tuple[oci.Layer, Path]
) -> None:
    import zipfile

    changed = tmp_path / lightbox_wheel.name
    with zipfile.ZipFile(lightbox_wheel) as src, zipfile.ZipFile(changed, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "lightbox/cli.py":
                data += b"\n# changed\n"
            dst.writestr(item, data)
    other = _app_layer(changed, installer_whl, tmp_path / "changed")
    assert app_layer[0].blob.digest != other.blob.digest


def test_the_app_layer_holds_what_pip_installs(
    tmp_path: Path, lightbox_wheel: Path, app_layer: tuple[oci.Layer, Path]
) -> None:
    """Equal to the Containerfile's pip install: every package file, byte for byte, in the same place."""
    target = tmp_path / "pip"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            str(lightbox_wheel),
        ],
        check=True,
        capture_output=True,
    )
    bookkeeping = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    site = "opt/venv/lib/python3.11/site-packages/"
    ours: dict[str, bytes] = {}
    with tarfile.open(app_layer[1], "r:gz") as tar:
        for m in tar.getmembers():
            if (
                m.isfile()
                and m.name.startswith(site)
                and not m.name.endswith(".pyc")
                and Path(m.name).name not in bookkeeping
            ):
                ours[m.name.removeprefix(site)] = tar.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == "opt/venv/bin/lightbox":
                script = tar.extractfile(m).read()  # type: ignore[union-attr]
                assert script.startswith(b"#!/opt/venv/bin/python\n") and m.mode & 0o111
    theirs = {
        p.relative_to(target).as_posix(): p.read_bytes()
        for p in target.rglob("*")
        if p.is_file() and p.parts[len(target.parts)] != "bin" and p.name not in bookkeeping
    }
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == theirs[k] for k in ours)


def test_a_cached_layer_is_not_built_again(tmp_path: Path) -> None:
    calls = []

    def make(work: Path, log_path: Path) -> tuple[Path, oci.Layer]:
        calls.append(work)
        out = work / "l.tar.gz"
        return out, oci.write_layer([oci.Entry("etc/x", "file", 0o644, data=b"x")], out, EPOCH)

    s = images.Settings(ROOT, tmp_path / "cache", EPOCH, "0.1.0", lambda line: None)
    progress = images.Progress(lambda line: None)
    first = images.cached_layer(s, progress, "copy", {"x": 1}, "x", make)
    second = images.cached_layer(s, progress, "copy", {"x": 1}, "x", make)
    third = images.cached_layer(s, progress, "copy", {"x": 2}, "x", make)
    assert first == second == third  # same content, so the same digest
    assert len(calls) == 2  # inputs {"x": 1} built once, {"x": 2} once


# --- the OCI archive ---------------------------------------------------------------------------


def test_the_archive_is_an_oci_layout_naming_the_image(tmp_path: Path) -> None:
    store = oci.BlobStore(tmp_path / "blobs")
    layer_file = tmp_path / "l.tar.gz"
    made = oci.write_layer([oci.Entry("opt/lightbox/algorithm.json", "file", 0o644, data=b"{}")], layer_file, EPOCH)
    layer = oci.Layer(store.put_file(layer_file, oci.MEDIA_LAYER_GZIP), made.diff_id)
    config = store.put_bytes(
        oci.canonical_json(
            oci.image_config(
                [layer], env=["PATH=/bin"], entrypoint=["x"], cmd=None, user="65532", workdir="/", labels={}
            )
        ),
        oci.MEDIA_CONFIG,
    )
    manifest = store.put_bytes(oci.canonical_json(oci.manifest(config, [layer])), oci.MEDIA_MANIFEST)
    oci.write_archive(store, manifest, "localhost/lightbox", "0.1.0", tmp_path / "a.tar", EPOCH)
    with tarfile.open(tmp_path / "a.tar") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert (
        entry["digest"] == manifest.digest
        and entry["annotations"]["io.containerd.image.name"] == "localhost/lightbox:0.1.0"
    )
    for name, data in files.items():  # every blob is stored under its own sha256
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    doc = json.loads(files[f"blobs/sha256/{manifest.digest[7:]}"])
    cfg = json.loads(files[f"blobs/sha256/{doc['config']['digest'][7:]}"])
    assert "created" not in cfg and "history" not in cfg  # timestamps would change the digest on every build
    assert cfg["config"]["User"] == "65532"
    layer_bytes = files[f"blobs/sha256/{doc['layers'][0]['digest'][7:]}"]
    assert cfg["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(gzip.decompress(layer_bytes)).hexdigest()]


def test_dependencies_are_pinned_to_what_is_installed_here() -> None:
    pins = images.pinned_requirements(ROOT)
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True, text=True, check=True
    ).stdout
    frozen = {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
        for line in freeze.splitlines()
        if "==" in line
    }
    for pin in pins:
        name, version = pin.split("==")
        assert frozen.get(name) == version, pin
    named = {p.split("==")[0] for p in pins}
    # pyproject's direct runtime dependencies and one transitive one (pydantic -> pydantic-core)
    assert {"kopf", "kubernetes", "pydantic", "pydicom", "numpy", "pydantic-core"} <= named
    assert not named & {
        "pytest",
        "scikit-learn",
        "markdown-it-py",
        "mutmut",
    }  # test extras stay out of the image (scipy is a runtime dependency: drift)


def test_unknown_image_names_are_refused() -> None:
    with pytest.raises(images.ImageBuildError, match="unknown image"):
        images.build(["nonesuch"])


def test_only_the_newest_archives_of_an_image_are_kept(tmp_path: Path) -> None:
    import os

    for i, name in enumerate(
        ["lightbox-0.1.0-a", "lightbox-0.1.0-b", "lightbox-0.1.0-c", "lightbox-0.1.0-d", "lightbox-reference-x-0.1.0-a"]
    ):
        p = tmp_path / f"{name}.oci.tar"
        p.write_bytes(b"")
        os.utime(p, (1000 + i, 1000 + i))
    images._prune_archives(tmp_path, "lightbox-0.1.0-", keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lightbox-0.1.0-c.oci.tar", "lightbox-0.1.0-d.oci.tar", "lightbox-reference-x-0.1.0-a.oci.tar"]
